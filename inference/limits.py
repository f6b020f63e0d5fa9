"""Request-size limits of the OpenAI-compatible API (rates and budgets: the `limits` app).

`BodyLimit` is ASGI middleware: it refuses an upload over the limit while it streams in,
before Django reads it whole (Django's ASGI handler spools the entire body first), with or
without a Content-Length.
"""

import asyncio
import re

import orjson
from django.conf import settings

from inference.errors import RequestTooLarge, envelope

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
