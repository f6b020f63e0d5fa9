"""The `cubeai_breaker_open` gauge follows every breaker verdict of the forwarder: a 502/503
that fails over, a timeout after the request was sent, and the answer that closes it."""

import json

import pytest
from prometheus_client import REGISTRY

from inference import upstream
from inference.errors import UpstreamTimeout
from inference.registry import Target, registry


def _target(backend_id: int, name: str, base_url: str) -> Target:
    return Target(
        id=backend_id,
        name=name,
        base_url=base_url,
        kind="openai",
        api_key="",
        tee_type="none",
        attestation="none",
        pinned_key_sha256="",
        routable=True,
    )


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("cubeai_breaker_open", {"backend": name})


def body_for(upstream_model: str) -> bytes:
    return json.dumps(
        {"model": upstream_model, "messages": [{"role": "user", "content": "x"}]}
    ).encode()


@pytest.fixture
def one_failure_opens(settings):
    settings.CUBEAI_BREAKER_FAILURES = 1
    settings.CUBEAI_BREAKER_COOLDOWN_SECONDS = 60
    yield
    registry.breakers.clear()


async def test_a_503_that_fails_over_opens_the_gauge_and_an_answer_closes_it(
    fake_upstream_url, one_failure_opens
):
    first = _target(910_001, "gauge-503", f"{fake_upstream_url}/v1")
    second = _target(910_002, "gauge-ok", f"{fake_upstream_url}/v1")
    registry.breakers.clear()
    try:
        # The first deployment answers 503: the request fails over, the first one's breaker
        # opens (one failure is enough here) and the gauge says so at once.
        target, _, response = await upstream.open_response(
            [(first, "fault-503"), (second, "echo")],
            "chat/completions",
            request_id="req_gauge",
            body_for=body_for,
        )
        response.release()
        upstream.done(target)
        assert target is second
        assert registry.breaker(first.id).state == "open"
        assert gauge("gauge-503") == 1
        assert gauge("gauge-ok") == 0
        # An answer closes it again, and the gauge follows.
        registry.breakers[first.id].open_until = 0.0001  # the cool-down is over: half-open
        target, _, response = await upstream.open_response(
            [(first, "echo")], "chat/completions", request_id="req_gauge", body_for=body_for
        )
        response.release()
        upstream.done(target)
        assert gauge("gauge-503") == 0
    finally:
        await upstream.session_close()


async def test_a_timeout_after_the_request_was_sent_opens_the_gauge(
    fake_upstream_url, one_failure_opens, settings
):
    settings.CUBEAI_UPSTREAM_TOTAL_TIMEOUT = 0.5
    settings.CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT = 0.5
    slow = _target(910_003, "gauge-slow", f"{fake_upstream_url}/v1")
    registry.breakers.clear()
    try:
        with pytest.raises(UpstreamTimeout):
            await upstream.open_response(
                [(slow, "fault-slow")],
                "chat/completions",
                request_id="req_gauge",
                body_for=body_for,
            )
        assert gauge("gauge-slow") == 1
    finally:
        await upstream.session_close()
