"""Faults the real agent cannot produce on demand, injected by the fake upstream."""

import itertools
import statistics
import time

import httpx
import openai
import pytest

from tests.inference.conftest import committed

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def ask(stack, model: str, **options):
    return stack.client(stack.alice_token, timeout=20).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "ping"}], **options
    )


def raw_stream(stack, model: str):
    """A streamed chat request read line by line, as an SSE client would."""
    return httpx.stream(
        "POST",
        f"{stack.base_url(stack.alpha)}/chat/completions",
        headers={"Authorization": f"Bearer {stack.alice_token}"},
        json={"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True},
        timeout=20,
    )


def test_a_refused_connection_fails_over_to_another_deployment(stack):
    for _ in range(4):
        assert ask(stack, "flaky").choices[0].message.content.startswith("echo:")


def test_a_503_fails_over_to_another_deployment(stack):
    for _ in range(4):
        assert ask(stack, "overloaded").choices[0].message.content.startswith("echo:")


def test_a_slow_backend_times_out_without_failing_over(stack, fault_gateway_url):
    # The fault gateway: 1.5 s for a stream's first chunk, 3 s for a whole answer; the slow
    # backend takes 5 s. Routing takes the model's two deployments in turn, so of two
    # requests one goes to the slow backend first: it got the request, so the request is a
    # 504, not run again on the healthy one; the other is served at once.
    stack.routed(fault_gateway_url)
    client = stack.client(stack.alice_token, gateway=fault_gateway_url, timeout=20)

    def timed(stream: bool) -> tuple[int, float]:
        started = time.monotonic()
        try:
            answer = client.chat.completions.create(
                model="slow-first", messages=[{"role": "user", "content": "ping"}], stream=stream
            )
            if stream:
                assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
            else:
                assert answer.choices[0].message.content.startswith("echo:")
            status = 200
        except openai.APIStatusError as error:
            assert error.body["code"] == "timeout"
            status = error.status_code
        return status, time.monotonic() - started

    whole = sorted(timed(stream=False) for _ in range(2))
    assert [status for status, _ in whole] == [200, 504]
    assert whole[0][1] < 1.5 and 2.5 < whole[1][1] < 4.5
    streamed = sorted(timed(stream=True) for _ in range(2))
    assert [status for status, _ in streamed] == [200, 504]
    assert streamed[1][1] < 3


def test_a_500_is_normalised_without_upstream_internals(stack):
    with pytest.raises(openai.InternalServerError) as caught:
        ask(stack, "broken")
    assert caught.value.status_code == 502
    assert "boom" not in str(caught.value.body)
    assert caught.value.body["type"] == "server_error"


def test_a_stream_cut_in_the_middle_ends_with_one_error_event(stack):
    with raw_stream(stack, "cut") as response:
        events = [line for line in response.iter_lines() if line]
    assert events[-1].startswith('data: {"error"')
    assert "[DONE]" not in "".join(events)
    assert sum('"error"' in e for e in events) == 1


def test_streams_are_relayed_chunk_by_chunk_never_buffered(stack):
    arrivals = []
    with raw_stream(stack, "paced") as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                arrivals.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)][:4]
    # The upstream sends its first five chunks 100 ms apart.
    assert len(gaps) == 4
    assert 0.07 < statistics.median(gaps) < 0.2, gaps


def test_a_client_that_goes_away_cancels_the_upstream_stream(stack):
    before = httpx.get(f"{stack.fake}/stats").json()
    with raw_stream(stack, "slow-stream") as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = httpx.get(f"{stack.fake}/stats").json()
        if after["streams_cancelled"] > before["streams_cancelled"]:
            break
        time.sleep(0.1)
    assert after["streams_cancelled"] == before["streams_cancelled"] + 1
    assert after["streams_finished"] == before["streams_finished"]


def test_a_slow_client_does_not_hold_up_other_requests(stack):
    with raw_stream(stack, "slow-stream") as slow:
        next(slow.iter_lines())
        started = time.monotonic()
        assert ask(stack, "echo").choices[0].message.content.startswith("echo:")
        assert time.monotonic() - started < 1.0


def test_after_faults_the_gateway_still_serves_and_leaks_nothing(stack):
    first = ask(stack, "echo", user="first").choices[0].message.content
    second = stack.client(stack.alice_token).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "second request"}]
    )
    assert "ping" in first and "ping" not in second.choices[0].message.content
    assert httpx.get(f"{stack.gateway}/healthz").status_code == 200


def test_the_background_health_check_takes_dead_backends_out_and_live_ones_in(stack):
    from inference import health
    from inference.models import Backend

    def check() -> dict[str, bool]:
        Backend.objects.filter(name="e2e-fake-ok").update(healthy=False)
        return health.backends_check_health()

    results = committed(check)
    assert results["e2e-fake-ok"] is True
    assert results["e2e-dead"] is False
    assert committed(lambda: Backend.objects.get(name="e2e-fake-ok").healthy)
    # The dead deployment is no longer tried; the model is served by the live one.
    assert ask(stack, "flaky").choices[0].message.content.startswith("echo:")
