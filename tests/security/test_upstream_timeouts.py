"""Timeouts that do not double the work (finding: the 120 s "first byte" timeout also covered
a whole non-streamed generation, so a long answer timed out, failed over and ran again on
another backend, paid twice, and the breaker counted it against a healthy backend).

Connecting, a stream's first chunk and a whole answer have timeouts of their own; a request
fails over only while no backend accepted it; the breaker counts backend faults only. The
pipeline is called directly, the fake upstream process plays the backends.
"""

import asyncio
import time
import uuid

import httpx
import pytest

from domains import permissions, services
from domains.models import User
from inference import pipeline
from inference.context import Caller
from inference.errors import InferenceError, UpstreamTimeout
from inference.registry import registry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cast(fake_backends, settings, pooled_client):
    settings.CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT = 1.0
    settings.CUBEAI_UPSTREAM_TOTAL_TIMEOUT = 3.0
    settings.CUBEAI_BREAKER_FAILURES = 3
    owner = User.objects.create_user("timeouts@example.com", "pw-owner-123456")
    domain = services.domain_create(creator=owner, name="Timeouts", route="timeouts")
    slow, healthy = fake_backends.backend("sec-a-slow"), fake_backends.backend("sec-b-healthy")
    fake_backends.deploy("slow-answer", [(slow, "fault-slow-2"), (healthy, "echo")])
    fake_backends.deploy("too-slow", [(slow, "fault-slow"), (healthy, "echo")])
    fake_backends.deploy("refuses", [(healthy, "fault-400")])
    fake_backends.deploy("breaks", [(healthy, "fault-500")])
    fake_backends.deploy("streams", [(healthy, "slow-stream")])
    caller = Caller(
        token_id=uuid.uuid4().int % 10**9,
        user_id=owner.pk,
        key_id="k",
        domain_id=str(domain.pk),
        permissions=frozenset(permissions.ALL),
    )
    return caller, slow, healthy, fake_backends.url


def unique(prefix: str) -> str:
    """A marker of letters only: a long run of digits would be masked by the guardrails as a
    national id on its way to the backend."""
    return prefix + "-" + uuid.uuid4().hex.translate(str.maketrans("0123456789", "ghijklmnop"))


def ask(model: str, marker: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": marker}], **extra}


def last_seen(url: str, upstream_model: str) -> str:
    """The content of the last request the fake upstream got for that model, or ""."""
    body = httpx.get(f"{url}/stats").json()["last"].get(upstream_model) or {}
    return str(body.get("messages"))


async def test_a_whole_answer_slower_than_the_first_byte_timeout_is_served_once(cast):
    caller, _, _, url = cast
    marker = unique("slow")
    reply = await pipeline.chat(caller, ask("slow-answer", marker), request_id="req-slow")
    # 2 s of thinking is within the 3 s total: the slow backend answers, no one else ran it.
    assert reply.call.target.name == "sec-a-slow"
    assert marker in reply.body["choices"][0]["message"]["content"]
    assert marker in last_seen(url, "fault-slow-2")
    assert marker not in last_seen(url, "echo")


async def test_a_whole_answer_past_the_total_is_a_504_never_run_elsewhere(cast):
    caller, slow, _, url = cast
    marker = unique("too-slow")
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await pipeline.chat(caller, ask("too-slow", marker), request_id="req-too-slow")
    assert 2.5 < time.monotonic() - started < 4.5
    assert caught.value.status == 504 and caught.value.type == "server_error"
    assert marker in last_seen(url, "fault-slow")
    assert marker not in last_seen(url, "echo")
    # A timeout is the backend's fault: counted once.
    assert registry.breaker(slow.id).failures == 1


async def test_a_streams_first_chunk_has_its_own_timeout_and_does_not_fail_over(cast):
    caller, _, _, url = cast
    marker = unique("stream")
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await pipeline.chat(caller, ask("too-slow", marker, stream=True), request_id="req-st")
    assert time.monotonic() - started < 2.5
    assert marker not in last_seen(url, "echo")


async def test_client_errors_and_cancellations_never_count_against_a_backend(cast):
    caller, _, healthy, _ = cast
    for attempt in range(5):
        with pytest.raises(InferenceError) as caught:
            await pipeline.chat(caller, ask("refuses", "x"), request_id=f"req-400-{attempt}")
        assert caught.value.status == 400
    # A client that leaves a stream, and one whose request is cancelled while waiting.
    for _ in range(3):
        stream = await pipeline.chat(caller, ask("streams", "x", stream=True), request_id="s")
        async for _ in stream:
            break
        await stream.aclose()
        task = asyncio.create_task(pipeline.chat(caller, ask("too-slow", "x"), request_id="c"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert registry.breaker(healthy.id).failures == 0
    assert registry.breaker(healthy.id).allows(time.monotonic())
    for attempt in range(3):
        with pytest.raises(InferenceError) as caught:
            await pipeline.chat(caller, ask("breaks", "x"), request_id=f"req-500-{attempt}")
        assert caught.value.status == 502
    assert not registry.breaker(healthy.id).allows(time.monotonic())
