"""The authentication cache of the API (`inference.context.caller_for`): concurrent misses
of one token share one resolution, and an entry past half its life is served at once and
resolved again in the background, so steady traffic never waits for a miss; a refresh that
finds the token revoked drops the entry."""

import asyncio
import threading

import pytest

from cubeai.exceptions import AuthenticationFailed
from inference import context

DOMAIN = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def resolver(settings, monkeypatch):
    """`context.resolve` replaced by a counted one; `gate` blocks it until set."""
    settings.CUBEAI_OFFPATH_EXECUTORS = True  # the server's executors, as in production
    settings.CUBEAI_AUTH_CACHE_SECONDS = 1
    context._cache.clear()
    calls: list[str] = []
    gate = threading.Event()
    gate.set()
    outcome: dict = {"error": None}

    def resolve(raw_token, domain_id, client_ip):
        calls.append(raw_token)
        assert gate.wait(5)
        if outcome["error"] is not None:
            raise outcome["error"]
        return context.Caller(
            token_id=len(calls), user_id=1, key_id="k", domain_id=domain_id,
            permissions=frozenset({"chat"}),
        )  # fmt: skip

    monkeypatch.setattr(context, "resolve", resolve)
    yield calls, gate, outcome
    context._cache.clear()


def test_concurrent_misses_of_one_token_share_one_resolution(resolver):
    calls, gate, _ = resolver
    gate.clear()

    async def many():
        waiting = [asyncio.create_task(context.caller_for("t", DOMAIN, None)) for _ in range(20)]
        await asyncio.sleep(0.1)
        gate.set()
        return await asyncio.gather(*waiting)

    callers = asyncio.run(many())
    assert calls == ["t"]
    assert {caller.token_id for caller in callers} == {1}


def test_an_aging_entry_is_served_at_once_and_refreshed_behind(resolver):
    calls, gate, _ = resolver

    async def scenario():
        first = await context.caller_for("t", DOMAIN, None)
        key = next(iter(context._cache))
        expires, cached = context._cache[key]
        context._cache[key] = (expires - 0.7, cached)  # past half its life
        gate.clear()  # the refresh will block: the request must not wait for it
        served = await asyncio.wait_for(context.caller_for("t", DOMAIN, None), 1)
        assert served is first
        gate.set()
        while key in context._resolving:
            await asyncio.sleep(0.01)
        return await context.caller_for("t", DOMAIN, None)

    refreshed = asyncio.run(scenario())
    assert calls == ["t", "t"]
    assert refreshed.token_id == 2  # the background resolution's


def test_a_refresh_that_finds_the_token_revoked_drops_the_entry(resolver):
    calls, _, outcome = resolver

    async def scenario():
        await context.caller_for("t", DOMAIN, None)
        key = next(iter(context._cache))
        expires, cached = context._cache[key]
        context._cache[key] = (expires - 0.7, cached)
        outcome["error"] = AuthenticationFailed()
        await context.caller_for("t", DOMAIN, None)  # still served: within its bound
        while key in context._resolving:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        assert key not in context._cache
        with pytest.raises(AuthenticationFailed):
            await context.caller_for("t", DOMAIN, None)

    asyncio.run(scenario())
    assert calls == ["t", "t", "t"]
