"""Request-size and request-rate limits of the OpenAI-compatible API.

`BodyLimit` is ASGI middleware, on every path: it refuses a body over the limit while it
streams in, before Django reads it whole (Django's ASGI handler spools the entire body
first), with or without a Content-Length, and one that comes too slowly.
`RateLimiter` counts requests per token and per domain in fixed one-minute windows, shared
by all replicas through Redis when it is configured: inference requests, and separately the
clients' attestation challenges.
"""

import asyncio
import re
import time
import uuid
from typing import Any

import orjson
from django.conf import settings

from inference.errors import InferenceError, RateLimited, RequestTooLarge, envelope

AUDIO_PATH = re.compile(r"^/proxy/[^/]+/v1/audio/")
# After a 413 the rest of a refused upload is still read, and dropped, this long: closing at
# once with unread data resets the connection, and a client still writing (Node's fetch, for
# one) then reports a connection error instead of the 413. Bounded, so that a client never
# holds the connection until it finishes.
LINGER_SECONDS = 2.0


class BodyLimit:
    """Every request's body, on every path: answer 413 as soon as it passes its path's size
    limit, and 408 when it comes too slowly (`CUBEAI_BODY_READ_TIMEOUT` without a byte, or
    not whole after `CUBEAI_BODY_TOTAL_TIMEOUT`), so a client that declares a length and
    sends less never holds its connection. Under /proxy/ the answer is OpenAI's envelope,
    elsewhere `{"detail": ...}` as the management API words its errors."""

    def __init__(self, app) -> None:
        self.app = app

    def _limit(self, path: str) -> int:
        if AUDIO_PATH.match(path):
            return settings.CUBEAI_MAX_AUDIO_BYTES
        return settings.CUBEAI_MAX_JSON_BYTES

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = self._limit(path)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._refuse(receive, send, path, RequestTooLarge(limit))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.CUBEAI_BODY_TOTAL_TIMEOUT
        received = 0
        whole = False
        refusal: InferenceError | None = None

        async def limited_receive():
            nonlocal received, whole, refusal
            if whole:
                # The body is in; what follows is the wait for a disconnect.
                return await receive()
            if refusal is not None:
                return {"type": "http.disconnect"}
            wait = min(settings.CUBEAI_BODY_READ_TIMEOUT, deadline - loop.time())
            try:
                async with asyncio.timeout(max(wait, 0)):
                    message = await receive()
            except TimeoutError:
                refusal = BodyTooSlow()
                # Tell the app the client went away; it stops reading at once.
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = RequestTooLarge(limit)
                    return {"type": "http.disconnect"}
                whole = not message.get("more_body", False)
            return message

        started = False

        async def tracking_send(message):
            nonlocal started
            if refusal is not None:
                return
            started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if refusal is not None and not started:
            await self._refuse(receive, send, path, refusal)

    async def _refuse(self, receive, send, path: str, error: InferenceError) -> None:
        if path.startswith("/proxy/"):
            body = orjson.dumps(envelope(error))
        else:
            body = orjson.dumps({"detail": error.message})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if path.startswith("/proxy/"):
            headers.append((b"x-request-id", f"req_{uuid.uuid4().hex}".encode()))
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if isinstance(error, RequestTooLarge):
            await _discard_for_a_while(receive)
        # The response ends here, and the server closes the connection (`connection: close`).
        await send({"type": "http.response.body", "body": b""})


class BodyTooSlow(InferenceError):
    """The body did not arrive in time (408): the connection is closed."""

    status = 408
    code = "request_timeout"

    def __init__(self) -> None:
        super().__init__("The request body did not arrive in time.", type="invalid_request_error")


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

    async def check(
        self,
        *,
        token_id: int,
        domain_id: str,
        kind: str = "requests",
        limits: tuple[int, int] | None = None,
    ) -> dict[str, str]:
        """Count this request; raise 429 over a limit; return the x-ratelimit headers.

        `kind` names a separate pair of counters with its own `limits` (per token, per
        domain): "requests" is inference, "attestation" the clients' challenges."""
        now = time.time()
        window = int(now // 60)
        reset = 60 - int(now % 60)
        if limits is None:
            limits = (settings.CUBEAI_RATE_LIMIT_TOKEN_RPM, settings.CUBEAI_RATE_LIMIT_DOMAIN_RPM)
        prefix = "rl" if kind == "requests" else f"rl:{kind}"
        keys = [f"{prefix}:t:{token_id}:{window}", f"{prefix}:d:{domain_id}:{window}"]
        token_count, domain_count = await self._count(keys, window)
        remaining = min(limits[0] - token_count, limits[1] - domain_count)
        headers = {
            "x-ratelimit-limit-requests": str(limits[0]),
            "x-ratelimit-remaining-requests": str(max(0, remaining)),
            "x-ratelimit-reset-requests": f"{reset}s",
        }
        if remaining < 0:
            scope = "token" if token_count > limits[0] else "domain"
            what = "requests" if kind == "requests" else f"{kind} requests"
            raise RateLimited(
                f"Rate limit reached for this {scope}: {limits[scope == 'domain']} {what} per "
                f"minute. Retry after {reset} s.",
                headers={**headers, "Retry-After": str(reset)},
            )
        return headers


rate_limiter = RateLimiter()
