"""The limiter's algorithm, the same in each store: Redis (Lua), SQLite (the embedded
default, shared by the machine's processes) and process memory (fail-open)."""

import asyncio
import multiprocessing
import uuid

import pytest

from limits import engine
from limits.engine import Plan, Quota, Rate, Settlement, Streams

REDIS_TEST_URL = "redis://127.0.0.1:6379/14"


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path, settings):
    if request.param == "memory":
        return engine.MemoryStore()
    if request.param == "sqlite":
        return engine.SQLiteStore(str(tmp_path / "limits.sqlite3"))
    import os

    url = os.environ.get("REDIS_URL") or REDIS_TEST_URL
    if not _redis_up() and not os.environ.get("REDIS_URL"):
        pytest.skip("no Redis on 127.0.0.1:6379")
    return engine.RedisStore(url)


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_requests_per_minute_allow_the_limit_then_refuse_with_a_retry_time(store):
    rate = Rate(key(), 3, 1, "requests", "token")
    left = []
    for _ in range(3):
        verdict = await store.acquire(Plan([rate], []))
        assert verdict.refused is None
        left.append(engine.remaining(rate, verdict.tats[0], verdict.now_ms))
    assert left == [2, 1, 0]
    verdict = await store.acquire(Plan([rate], []))
    assert verdict.refused == rate
    # One request's worth comes back 20 s later (60 s / 3).
    assert 19_000 < verdict.retry_after_ms <= 20_000


async def test_tokens_are_reserved_then_settled_with_the_real_count(store):
    rate = Rate(key(), 1000, 600, "tokens", "token")
    first = await store.acquire(Plan([rate], []))
    assert engine.remaining(rate, first.tats[0], first.now_ms) == 400
    refused = await store.acquire(Plan([rate], []))
    assert refused.refused == rate
    # The call used 100 tokens, not 600: 500 come back.
    await store.settle(Settlement([(rate, -500)], []))
    again = await store.acquire(Plan([rate], []))
    assert again.refused is None
    assert engine.remaining(rate, again.tats[0], again.now_ms) == 300


async def test_all_limits_of_a_request_pass_or_none_is_charged(store):
    roomy = Rate(key(), 100, 1, "requests", "domain")
    tight = Rate(key(), 1, 1, "requests", "token")
    assert (await store.acquire(Plan([roomy, tight], []))).refused is None
    verdict = await store.acquire(Plan([roomy, tight], []))
    assert verdict.refused == tight
    # The refused request did not use the domain's allowance.
    assert engine.remaining(roomy, verdict.tats[0], verdict.now_ms) == 99


async def test_a_budget_refuses_once_spent_and_warns_once_at_80_percent(store):
    budget = Quota(key(), 100, 50, "domain", key())
    assert (await store.acquire(Plan([], [budget]))).refused is None
    warned = await store.settle(Settlement([], [(budget, 35)]))  # 85 used
    assert warned == [85]
    assert await store.settle(Settlement([], [(budget, 5)])) == [0]  # warned already
    assert (await store.acquire(Plan([], [budget]))).refused is None  # 90 < 100
    verdict = await store.acquire(Plan([], [budget]))  # 140 >= 100
    assert verdict.refused == budget
    assert verdict.used == [140]


async def test_concurrent_streams_free_their_slot_when_settled(store):
    name = key()
    first, second = Streams(name, 1, "a"), Streams(name, 1, "b")
    assert (await store.acquire(Plan([], [], first))).refused is None
    assert (await store.acquire(Plan([], [], second))).refused == second
    await store.settle(Settlement([], [], first))
    assert (await store.acquire(Plan([], [], second))).refused is None


def _hammer(path: str, name: str, tries: int, results) -> None:
    import django

    django.setup()
    store = engine.SQLiteStore(path)
    rate = Rate(name, 20, 1, "requests", "token")
    accepted = 0
    for _ in range(tries):
        if asyncio.run(store.acquire(Plan([rate], []))).refused is None:
            accepted += 1
    results.put(accepted)


def test_the_sqlite_store_holds_across_processes(tmp_path):
    """The embedded default: four processes of one machine share the limit exactly."""
    path, name = str(tmp_path / "shared.sqlite3"), key()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_hammer, args=(path, name, 15, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    total = sum(results.get(timeout=5) for _ in workers)
    assert 20 <= total <= 21  # one more may be earned back while they run


def test_the_sqlite_store_takes_turns_on_the_machine_lock_not_in_sqlites_busy_wait(tmp_path):
    """A check waits for the machine's turn lock (`<file>.lock`), which the kernel hands over
    as soon as it is free, never in SQLite's busy handler (sleeps of up to 100 ms: at c=64
    some checks took seconds)."""
    import fcntl
    import os
    import threading

    store = engine.SQLiteStore(str(tmp_path / "limits.sqlite3"))
    rate = Rate(key(), 10, 1, "requests", "token")
    assert asyncio.run(store.acquire(Plan([rate], []))).refused is None  # file and tables made
    held = os.open(f"{store.path}.lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # another process's turn
    verdicts = []
    checking = threading.Thread(
        target=lambda: verdicts.append(asyncio.run(store.acquire(Plan([rate], [])))), daemon=True
    )
    checking.start()
    checking.join(0.5)
    assert checking.is_alive() and not verdicts  # it waits for the turn...
    fcntl.flock(held, fcntl.LOCK_UN)
    os.close(held)
    checking.join(5)
    assert verdicts and verdicts[0].refused is None  # ...and goes on once it is free


async def test_a_burst_opens_no_more_redis_connections_than_the_pool_allows(settings):
    """The limiter's pool grows with the concurrency it meets and stops at its bound: 200
    checks at once share `CUBEAI_REDIS_MAX_CONNECTIONS` connections (counted by the server),
    all served."""
    import os

    import redis.asyncio

    url = os.environ.get("REDIS_URL") or REDIS_TEST_URL
    if not _redis_up() and not os.environ.get("REDIS_URL"):
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CUBEAI_REDIS_MAX_CONNECTIONS = 3
    name = f"limiter-{uuid.uuid4().hex[:8]}"
    store = engine.RedisStore(f"{url}?client_name={name}")
    rate = Rate(key(), 1_000_000, 1, "requests", "token")
    verdicts = await asyncio.gather(*(store.acquire(Plan([rate], [])) for _ in range(200)))
    assert all(verdict.refused is None for verdict in verdicts)
    observer = redis.asyncio.Redis.from_url(url)
    opened = [c for c in await observer.client_list() if c["name"] == name]
    await observer.aclose()
    assert len(opened) == 3
