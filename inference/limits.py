"""Request-size and request-rate limits of the OpenAI-compatible API.

`BodyLimit` is ASGI middleware: it refuses an upload over the limit while it streams in,
before Django reads it whole (Django's ASGI handler spools the entire body first), with or
without a Content-Length.
`RateLimiter` counts requests per token and per domain in fixed one-minute windows, shared
by all replicas through Redis when it is configured.
"""

import asyncio
import re
import time
from typing import Any

import orjson
from django.conf import settings

from inference.errors import RateLimited, RequestTooLarge, envelope

AUDIO_PATH = re.compile(r"^/proxy/[^/]+/v1/audio/")
# After a 413 the rest of a refused upload is still read, and dropped, this long: closing at
# once with unread data resets the connection, and a client still writing (Node's fetch, for
# one) then reports a connection error instead of the 413. Bounded, so that a client never
# holds the connection until it finishes.
LINGER_SECONDS = 2.0


class BodyLimit:
    """Answer 413 (OpenAI's envelope) as soon as a body passes its path's limit."""

    def __init__(self, app) -> None:
        self.app = app

    def _limit(self, path: str) -> int:
        if AUDIO_PATH.match(path):
            return settings.CUBEAI_MAX_AUDIO_BYTES
        return settings.CUBEAI_MAX_JSON_BYTES if path.startswith("/proxy/") else 0

    async def __call__(self, scope, receive, send):
        limit = self._limit(scope["path"]) if scope["type"] == "http" else 0
        if not limit:
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._refuse(receive, send, limit)
        received = 0
        exceeded = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    # Tell the app the client went away; it stops reading at once.
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def tracking_send(message):
            nonlocal started
            if exceeded:
                return
            started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if exceeded and not started:
            await self._refuse(receive, send, limit)

    async def _refuse(self, receive, send, limit: int) -> None:
        body = orjson.dumps(envelope(RequestTooLarge(limit)))
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await _discard_for_a_while(receive)
        # The response ends here, and the server closes the connection (`connection: close`).
        await send({"type": "http.response.body", "body": b""})


async def _discard_for_a_while(receive) -> None:
    """Read and drop what the client still sends, for at most LINGER_SECONDS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    while (remaining := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class RateLimiter:
    """Fixed one-minute windows per token and per domain."""

    def __init__(self) -> None:
        self._local: dict[str, tuple[int, int]] = {}
        # One client per event loop: an asyncio client belongs to the loop that made it, and
        # a Celery task or a test runs a loop of its own.
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    def _client(self):
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import redis.asyncio

            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            client = self._clients[loop] = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        return client

    async def _count(self, keys: list[str], window: int) -> list[int]:
        if settings.REDIS_URL:
            pipe = self._client().pipeline(transaction=False)
            for key in keys:
                pipe.incr(key)
                pipe.expire(key, 61, nx=True)
            results = await pipe.execute()
            return [int(v) for v in results[0::2]]
        counts = []
        for key in keys:
            seen_window, count = self._local.get(key, (window, 0))
            count = count + 1 if seen_window == window else 1
            self._local[key] = (window, count)
            counts.append(count)
        if len(self._local) > 100_000:
            self._local = {k: v for k, v in self._local.items() if v[0] == window}
        return counts

    async def check(self, *, caller_key: str, domain_id: str) -> dict[str, str]:
        """Count this request; raise 429 over a limit; return the x-ratelimit headers.

        `caller_key` names who is counted against the per-token limit: a token (`t:<id>`)
        or a signed-in browser session's user (`u:<id>`), see `Caller.rate_key`."""
        now = time.time()
        window = int(now // 60)
        reset = 60 - int(now % 60)
        limits = (settings.CUBEAI_RATE_LIMIT_TOKEN_RPM, settings.CUBEAI_RATE_LIMIT_DOMAIN_RPM)
        keys = [f"rl:{caller_key}:{window}", f"rl:d:{domain_id}:{window}"]
        token_count, domain_count = await self._count(keys, window)
        remaining = min(limits[0] - token_count, limits[1] - domain_count)
        headers = {
            "x-ratelimit-limit-requests": str(limits[0]),
            "x-ratelimit-remaining-requests": str(max(0, remaining)),
            "x-ratelimit-reset-requests": f"{reset}s",
        }
        if remaining < 0:
            scope = "token" if token_count > limits[0] else "domain"
            raise RateLimited(
                f"Rate limit reached for this {scope}: {limits[scope == 'domain']} requests per "
                f"minute. Retry after {reset} s.",
                headers={**headers, "Retry-After": str(reset)},
            )
        return headers


rate_limiter = RateLimiter()
