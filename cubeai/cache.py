"""Django's Redis cache, degrading to a miss while Redis is unreachable.

The cache holds only what the database can answer again (token records, the
failed-authentication counter, the last-used throttle): while Redis is away a read is a
miss, a write does nothing, and every caller falls back to the database, so a Redis outage
is not an outage of the API. The limiter has its own store and each domain's failure mode
(`limits`); the job queue needs its broker (`cubeai.api` answers 503 while it is away).
"""

import logging
import time

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


class DegradingRedisCache(RedisCache):
    _warned_at = 0.0

    def _away(self, operation: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:
            type(self)._warned_at = now
            log.warning("cache: Redis is unreachable (%s); falling back to the database", operation)

    def get(self, key, default=None, version=None):
        try:
            return super().get(key, default, version)
        except UNREACHABLE:
            self._away("get")
            return default

    def get_many(self, keys, version=None):
        try:
            return super().get_many(keys, version)
        except UNREACHABLE:
            self._away("get_many")
            return {}

    def incr(self, key, delta=1, version=None):
        try:
            return super().incr(key, delta, version)
        except UNREACHABLE:
            self._away("incr")
            raise ValueError(f"Key '{key}' not found (the cache is unreachable).") from None


def _write(name: str, failed):
    def method(self, *args, **kwargs):
        try:
            return getattr(RedisCache, name)(self, *args, **kwargs)
        except UNREACHABLE:
            self._away(name)
            return failed

    method.__name__ = name
    return method


# Writes that fail do nothing: add and touch report False, deletes that nothing was there.
for _name, _failed in (
    ("set", None),
    ("add", False),
    ("touch", False),
    ("delete", False),
    ("set_many", []),
    ("delete_many", None),
    ("has_key", False),
):
    setattr(DegradingRedisCache, _name, _write(_name, _failed))
