"""The limiter: requests and tokens per minute, concurrent streams, monthly token budgets.

Rates use GCRA (the generic cell rate algorithm): each limit keeps one number, the
"theoretical arrival time" (TAT). A limit of L per minute spaces units 60/L s apart and
allows a burst of up to L; a request costing n units moves the TAT n·60/L s later and is
refused if that would put it more than a minute ahead of now. Tokens are reserved up front
(the prompt's estimate plus `max_tokens`) and settled after the call with the real count,
which moves the TAT back or further on. Budgets are monthly counters (UTC months),
reserved and settled the same way; a budget refuses once it is spent. Concurrent streams
are a sorted set of the streams in flight, each with an expiry, so a crashed process's
streams free their slots by themselves.

Every check of one request (all its limits together) is one atomic step: a Lua script in
Redis, shared by every process and replica; on the embedded default (no Redis) a
transaction in a small SQLite file under `DATA_DIR`, shared by every process of the
machine. While Redis is unreachable a domain fails open (the same algorithm in each
process's memory: approximate, each process counts alone) or closed (503), as its
`failure_mode` says; budget charges that could not reach Redis are kept and replayed when
it answers again.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings

log = logging.getLogger(__name__)

WINDOW_MS = 60_000


@dataclass(slots=True)
class Rate:
    """A per-minute limit: `kind` is "requests" or "tokens", `scope` "token" or "domain"."""

    key: str
    limit: int
    cost: int
    kind: str
    scope: str


@dataclass(slots=True)
class Quota:
    """A monthly token budget (`budget` 0: none, still counted)."""

    key: str
    budget: int
    cost: int
    scope: str
    warned_key: str
    # Whose budget a "token" quota is: the token id, or `u<user id>` for a browser session.
    holder: str = ""


@dataclass(slots=True)
class Streams:
    key: str
    limit: int
    member: str


@dataclass(slots=True)
class Plan:
    """Every limit one request must pass, with its cost in each."""

    rates: list[Rate]
    quotas: list[Quota]
    streams: Streams | None = None


@dataclass(slots=True)
class Verdict:
    """What the store answered: the first limit refused (if any) and each limit's state."""

    refused: Rate | Quota | Streams | None
    retry_after_ms: float
    now_ms: float
    # Per rate: its TAT after this request (or as it stands, if refused).
    tats: list[float] = field(default_factory=list)
    used: list[int] = field(default_factory=list)
    streams_in_flight: int = 0


@dataclass(slots=True)
class Settlement:
    """The correction after a call: the real count minus the reservation, per limit."""

    rates: list[tuple[Rate, int]]
    quotas: list[tuple[Quota, int]]
    streams: Streams | None = None


class Unavailable(Exception):
    """The shared store (Redis) did not answer."""


# The algorithm, once in Lua (Redis) and once in Python (SQLite, process memory). -------

ACQUIRE_LUA = """
local spec = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nr, nq = #spec.rates, #spec.quotas
local refused, retry = 0, 0
local tats, news, used = {}, {}, {}
for i = 1, nr do
  local interval = 60000 / spec.rates[i][1]
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new = tat + spec.rates[i][2] * interval
  if refused == 0 and new - now > 60000 + 0.001 then
    refused = i
    retry = new - now - 60000
  end
  tats[i], news[i] = tat, new
end
for j = 1, nq do
  used[j] = tonumber(redis.call('GET', KEYS[nr + j]) or '0')
  local budget = spec.quotas[j][1]
  if refused == 0 and budget > 0 and used[j] >= budget then
    refused = nr + j
    retry = spec.quotas[j][3] * 1000
  end
end
local in_flight = 0
if spec.stream then
  local key = KEYS[nr + nq + 1]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  in_flight = redis.call('ZCARD', key)
  if refused == 0 and in_flight >= spec.stream[1] then
    refused = nr + nq + 1
    retry = 1000
  end
end
if refused == 0 then
  for i = 1, nr do
    redis.call('SET', KEYS[i], tostring(news[i]), 'PX', math.ceil(news[i] - now) + 1000)
    tats[i] = news[i]
  end
  for j = 1, nq do
    used[j] = redis.call('INCRBY', KEYS[nr + j], spec.quotas[j][2])
    redis.call('EXPIRE', KEYS[nr + j], spec.quotas[j][4])
  end
  if spec.stream then
    local key = KEYS[nr + nq + 1]
    redis.call('ZADD', key, now + spec.stream[3], spec.stream[2])
    redis.call('PEXPIRE', key, spec.stream[3])
    in_flight = in_flight + 1
  end
end
local out = {refused, tostring(retry), tostring(now), in_flight}
for i = 1, nr do out[#out + 1] = tostring(tats[i]) end
for j = 1, nq do out[#out + 1] = tostring(used[j]) end
return out
"""

SETTLE_LUA = """
local spec = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nr, nq = #spec.rates, #spec.quotas
for i = 1, nr do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new = tat + spec.rates[i][2] * 60000 / spec.rates[i][1]
  if new > now then
    redis.call('SET', KEYS[i], tostring(new), 'PX', math.ceil(new - now) + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
local warned = {}
for j = 1, nq do
  local key = KEYS[nr + j]
  local used = redis.call('INCRBY', key, spec.quotas[j][2])
  redis.call('EXPIRE', key, spec.quotas[j][3])
  local budget = spec.quotas[j][1]
  warned[j] = 0
  if budget > 0 and used * 5 >= budget * 4 then
    if redis.call('SET', KEYS[nr + nq + j], '1', 'NX', 'EX', spec.quotas[j][3]) then
      warned[j] = used
    end
  end
end
if spec.stream then
  redis.call('ZREM', KEYS[nr + 2 * nq + 1], spec.stream)
end
return warned
"""


class _State:
    """The Python side's storage: a TAT or counter per key, and stream sets."""

    def get(self, key: str) -> float: ...
    def put(self, key: str, value: float, expires_ms: float) -> None: ...
    def streams(self, key: str, now: float) -> int: ...
    def stream_add(self, key: str, member: str, expires_ms: float) -> None: ...
    def stream_remove(self, key: str, member: str) -> None: ...
    def set_once(self, key: str, expires_ms: float) -> bool: ...


def _acquire(state: _State, plan: Plan, now: float) -> Verdict:
    refused: Any = None
    retry = 0.0
    tats, news = [], []
    for rate in plan.rates:
        tat = max(state.get(rate.key), now)
        new = tat + rate.cost * WINDOW_MS / rate.limit
        if refused is None and new - now > WINDOW_MS + 0.001:
            refused, retry = rate, new - now - WINDOW_MS
        tats.append(tat)
        news.append(new)
    used = [int(state.get(quota.key)) for quota in plan.quotas]
    for quota, spent in zip(plan.quotas, used, strict=True):
        if refused is None and quota.budget > 0 and spent >= quota.budget:
            refused, retry = quota, _quota_ttl() * 1000
    in_flight = 0
    if plan.streams is not None:
        in_flight = state.streams(plan.streams.key, now)
        if refused is None and in_flight >= plan.streams.limit:
            refused, retry = plan.streams, 1000
    if refused is None:
        for rate, new in zip(plan.rates, news, strict=True):
            state.put(rate.key, new, new + 1000)
        tats = news
        for index, quota in enumerate(plan.quotas):
            used[index] += quota.cost
            state.put(quota.key, used[index], now + _quota_ttl() * 1000)
        if plan.streams is not None:
            state.stream_add(plan.streams.key, plan.streams.member, now + _stream_ttl_ms())
            in_flight += 1
    return Verdict(refused, retry, now, tats, used, in_flight)


def _settle(state: _State, settlement: Settlement, now: float) -> list[int]:
    for rate, delta in settlement.rates:
        new = max(state.get(rate.key), now) + delta * WINDOW_MS / rate.limit
        state.put(rate.key, new, new + 1000)
    warned = []
    for quota, delta in settlement.quotas:
        used = int(state.get(quota.key)) + delta
        state.put(quota.key, used, now + _quota_ttl() * 1000)
        crossed = quota.budget > 0 and used * 5 >= quota.budget * 4
        warned.append(used if crossed and state.set_once(quota.warned_key, now + 40e8) else 0)
    if settlement.streams is not None:
        state.stream_remove(settlement.streams.key, settlement.streams.member)
    return warned


class _MemoryState(_State):
    """Process memory: the fail-open fallback (each process counts alone)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[float, float]] = {}
        self.sets: dict[str, dict[str, float]] = {}
        self.now = 0.0

    def get(self, key):
        value, expires = self.values.get(key, (0.0, 0.0))
        return value if expires > self.now else 0.0

    def put(self, key, value, expires_ms):
        self.values[key] = (value, expires_ms)
        if len(self.values) > 100_000:
            self.values = {k: v for k, v in self.values.items() if v[1] > self.now}

    def streams(self, key, now):
        members = self.sets.setdefault(key, {})
        for member in [m for m, expires in members.items() if expires <= now]:
            del members[member]
        return len(members)

    def stream_add(self, key, member, expires_ms):
        self.sets.setdefault(key, {})[member] = expires_ms

    def stream_remove(self, key, member):
        self.sets.get(key, {}).pop(member, None)

    def set_once(self, key, expires_ms):
        if self.get(key):
            return False
        self.put(key, 1.0, expires_ms)
        return True


class _SQLiteState(_State):
    """A SQLite file shared by the machine's processes, used inside one transaction.

    The values of `keys` are read in one query and the writes go in one `executemany` at the
    end (`write`): the transaction holds the machine's write lock throughout, and each
    statement costs its thread a wait for the interpreter lock, which the web process's
    other threads contend for."""

    UPSERT = (
        "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires"
    )

    def __init__(self, connection: sqlite3.Connection, now: float, keys: list[str]) -> None:
        self.db = connection
        self.now = now
        self.values = dict.fromkeys(keys, 0.0)
        self.writes: dict[str, tuple[str, float, float]] = {}
        if keys:
            marks = ", ".join("?" * len(keys))
            self.values.update(
                connection.execute(
                    f"SELECT key, value FROM kv WHERE key IN ({marks}) AND expires > ?",  # noqa: S608
                    (*keys, now),
                )
            )

    def get(self, key):
        if key not in self.values:
            row = self.db.execute(
                "SELECT value FROM kv WHERE key = ? AND expires > ?", (key, self.now)
            ).fetchone()
            self.values[key] = row[0] if row else 0.0
        return self.values[key]

    def put(self, key, value, expires_ms):
        self.values[key] = value
        self.writes[key] = (key, value, expires_ms)

    def write(self) -> None:
        if self.writes:
            self.db.executemany(self.UPSERT, list(self.writes.values()))

    def streams(self, key, now):
        self.db.execute("DELETE FROM streams WHERE key = ? AND expires <= ?", (key, now))
        return self.db.execute("SELECT COUNT(*) FROM streams WHERE key = ?", (key,)).fetchone()[0]

    def stream_add(self, key, member, expires_ms):
        self.db.execute(
            "INSERT OR REPLACE INTO streams (key, member, expires) VALUES (?, ?, ?)",
            (key, member, expires_ms),
        )

    def stream_remove(self, key, member):
        self.db.execute("DELETE FROM streams WHERE key = ? AND member = ?", (key, member))

    def set_once(self, key, expires_ms):
        if self.get(key):
            return False
        self.put(key, 1.0, expires_ms)
        return True


def _quota_ttl() -> int:
    """Seconds until the current UTC month rolls over."""
    now = time.gmtime()
    year, month = (now.tm_year + 1, 1) if now.tm_mon == 12 else (now.tm_year, now.tm_mon + 1)
    return max(
        1, int(time.mktime((year, month, 1, 0, 0, 0, 0, 0, 0)) - time.timezone - time.time())
    )


def _stream_ttl_ms() -> float:
    return settings.CUBEAI_LIMITS_STREAM_TTL_SECONDS * 1000


# The stores -------------------------------------------------------------------------------


class MemoryStore:
    """Process memory, behind a lock (Celery threads and the event loop may share it)."""

    def __init__(self) -> None:
        self.state = _MemoryState()
        self.lock = threading.Lock()

    async def acquire(self, plan: Plan) -> Verdict:
        with self.lock:
            self.state.now = time.time() * 1000
            return _acquire(self.state, plan, self.state.now)

    async def settle(self, settlement: Settlement) -> list[int]:
        with self.lock:
            self.state.now = time.time() * 1000
            return _settle(self.state, settlement, self.state.now)


def _keys(argument: Plan | Settlement) -> list[str]:
    """The counters a check or a settlement reads and writes (not the stream sets)."""
    if isinstance(argument, Plan):
        return [rate.key for rate in argument.rates] + [quota.key for quota in argument.quotas]
    quotas = [quota for quota, _ in argument.quotas]
    return [rate.key for rate, _ in argument.rates] + [
        key for quota in quotas for key in (quota.key, quota.warned_key)
    ]


class SQLiteStore:
    """The embedded default's store: one SQLite file, one IMMEDIATE transaction a check.

    A check is a few statements on a local file (synchronous=OFF: no fsync). When its turn
    is free it runs at once on the calling thread, the event loop's, with no hand-off to a
    thread and back (each cost a wake-up on the request's path). The machine's processes
    take turns on an advisory lock beside the file (`flock`); while another process has the
    turn, the check waits for it on the store's own thread, in the kernel, which wakes the
    waiter as soon as it is free, and the loop serves other requests meanwhile. Nothing ever
    waits in SQLite's busy handler, which sleeps longer and longer while the lock stays
    taken (up to 100 ms a turn: at c=64 a check now and then took seconds). A process that
    dies lets its turn go."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()
        self.mutex = threading.Lock()  # flock does not exclude threads sharing a descriptor
        self.turns: int | None = None  # the lock file's descriptor, opened on first use
        self.waiter = ThreadPoolExecutor(1, thread_name_prefix="cube-limits")

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value REAL, expires REAL)"
            )
            connection.execute(
                "CREATE TABLE IF NOT EXISTS streams "
                "(key TEXT, member TEXT, expires REAL, PRIMARY KEY (key, member))"
            )
            self.local.connection = connection
        return connection

    def _turn(self, *, wait: bool) -> bool:
        """Take this process's and the machine's turn: at once if both are free (else
        False), or, with `wait`, once they are."""
        if not self.mutex.acquire(blocking=wait):
            return False
        try:
            if self.turns is None:
                self.turns = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.turns, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.mutex.release()
            return False
        except OSError as exc:
            self.mutex.release()
            raise Unavailable(str(exc)) from None
        return True

    def _transaction(self, step, argument):
        try:
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                now = time.time() * 1000
                state = _SQLiteState(connection, now, _keys(argument))
                result = step(state, argument, now)
                state.write()
                if int(now) % 97 == 0:
                    connection.execute("DELETE FROM kv WHERE expires <= ?", (now,))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result
        except sqlite3.OperationalError as exc:
            # The file is unusable: as if Redis were down.
            raise Unavailable(str(exc)) from None
        finally:
            fcntl.flock(self.turns, fcntl.LOCK_UN)
            self.mutex.release()

    async def _run(self, step, argument):
        if self._turn(wait=False):
            return self._transaction(step, argument)
        return await asyncio.get_running_loop().run_in_executor(
            self.waiter, self._when_free, step, argument
        )

    def _when_free(self, step, argument):
        self._turn(wait=True)
        return self._transaction(step, argument)

    async def acquire(self, plan: Plan) -> Verdict:
        return await self._run(_acquire, plan)

    async def settle(self, settlement: Settlement) -> list[int]:
        return await self._run(_settle, settlement)


class RedisStore:
    """Redis, shared by every process and replica: one Lua script a check.

    One client per event loop: an asyncio client belongs to the loop that made it, and a
    Celery task or a test runs a loop of its own.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    def _client(self):
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import redis.asyncio

            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            timeout = settings.CUBEAI_LIMITS_REDIS_TIMEOUT_SECONDS
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                max_connections=settings.CUBEAI_REDIS_MAX_CONNECTIONS,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            client = redis.asyncio.Redis(connection_pool=pool)
            self._clients[loop] = (
                client,
                client.register_script(ACQUIRE_LUA),
                client.register_script(SETTLE_LUA),
            )
            return self._clients[loop]
        return client

    async def _call(self, script_index: int, keys: list[str], spec: dict):
        import redis.exceptions

        script = self._client()[script_index]
        try:
            return await script(keys=keys, args=[orjson.dumps(spec)])
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise Unavailable(str(exc)) from None

    async def acquire(self, plan: Plan) -> Verdict:
        keys = [rate.key for rate in plan.rates] + [quota.key for quota in plan.quotas]
        spec: dict[str, Any] = {
            "rates": [[rate.limit, rate.cost] for rate in plan.rates],
            "quotas": [[q.budget, q.cost, _quota_ttl(), _quota_ttl()] for q in plan.quotas],
        }
        if plan.streams is not None:
            keys.append(plan.streams.key)
            limit = plan.streams
            spec["stream"] = [limit.limit, limit.member, int(_stream_ttl_ms())]
        answer = await self._call(1, keys, spec)
        limits = [*plan.rates, *plan.quotas, plan.streams]
        refused = limits[int(answer[0]) - 1] if int(answer[0]) else None
        nr = len(plan.rates)
        return Verdict(
            refused=refused,
            retry_after_ms=float(answer[1]),
            now_ms=float(answer[2]),
            tats=[float(v) for v in answer[4 : 4 + nr]],
            used=[int(float(v)) for v in answer[4 + nr :]],
            streams_in_flight=int(answer[3]),
        )

    async def settle(self, settlement: Settlement) -> list[int]:
        rates, quotas = settlement.rates, settlement.quotas
        keys = [rate.key for rate, _ in rates] + [quota.key for quota, _ in quotas]
        keys += [quota.warned_key for quota, _ in quotas]
        spec: dict[str, Any] = {
            "rates": [[rate.limit, delta] for rate, delta in rates],
            "quotas": [[quota.budget, delta, _quota_ttl()] for quota, delta in quotas],
        }
        if settlement.streams is not None:
            keys.append(settlement.streams.key)
            spec["stream"] = settlement.streams.member
        return [int(v) for v in await self._call(2, keys, spec)]


def remaining(rate: Rate, tat: float, now: float) -> int:
    """Units still available at once under `rate`, given its TAT."""
    return max(0, math.floor((WINDOW_MS - (tat - now)) * rate.limit / WINDOW_MS + 1e-9))


def reset_seconds(tat: float, now: float) -> float:
    """Seconds until the limit is whole again."""
    return max(0.0, (tat - now) / 1000)
