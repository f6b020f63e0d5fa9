"""Request-size limits of the OpenAI-compatible API (rates and budgets: the `limits` app).

`BodyLimit` is ASGI middleware, on every path: it refuses a body over the limit while it
streams in, before Django reads it whole (Django's ASGI handler spools the entire body
first), with or without a Content-Length, and one that comes too slowly.
"""

import asyncio
import html
import re
import uuid

import orjson
from django.conf import settings

from inference.errors import InferenceError, RequestTooLarge, envelope

# Audio uploads: the API's audio endpoints (the synchronous ones and the jobs API) and the
# transcription page's form.
AUDIO_PATH = re.compile(r"^/proxy/[^/]+/v1/audio/|^/domains/[^/]+/transcriptions/$")
# Room for the multipart form around a file of exactly CUBEAI_MAX_AUDIO_BYTES (boundaries,
# part headers, the other fields, a page's CSRF token); the endpoints check the file's own
# size against the limit.
MULTIPART_ALLOWANCE = 64 * 1024
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
    elsewhere `{"detail": ...}` as the management API words its errors, or a short HTML page
    to a browser (a page's form)."""

    def __init__(self, app) -> None:
        self.app = app

    def _limit(self, path: str) -> tuple[int, int]:
        """The bytes a body of `path` may have, and the limit its refusal states."""
        if AUDIO_PATH.match(path):
            limit = settings.CUBEAI_MAX_AUDIO_BYTES
            return limit + MULTIPART_ALLOWANCE, limit
        return settings.CUBEAI_MAX_JSON_BYTES, settings.CUBEAI_MAX_JSON_BYTES

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit, stated = self._limit(path)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._refuse(receive, send, scope, RequestTooLarge(stated))
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
                    refusal = RequestTooLarge(stated)
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
            await self._refuse(receive, send, scope, refusal)

    async def _refuse(self, receive, send, scope, error: InferenceError) -> None:
        path = scope["path"]
        content_type = b"application/json"
        if path.startswith("/proxy/"):
            body = orjson.dumps(envelope(error))
        elif _wants_html(scope):
            body = _error_page(error.message, back=path)
            content_type = b"text/html; charset=utf-8"
        else:
            body = orjson.dumps({"detail": error.message})
        headers = [
            (b"content-type", content_type),
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


def _wants_html(scope) -> bool:
    """Whether the client is a browser sending a page's form (it accepts HTML)."""
    return any(
        name == b"accept" and b"text/html" in value for name, value in scope.get("headers", ())
    )


def _error_page(message: str, *, back: str) -> bytes:
    """A page a browser shows in place of the form it sent: the reason, and a way back."""
    return (
        "<!doctype html>\n<html lang=en><meta charset=utf-8><title>Upload refused</title>\n"
        f"<h1>Upload refused</h1>\n<p>{html.escape(message)}</p>\n"
        f'<p><a href="{html.escape(back)}">Back</a></p>\n'
    ).encode()


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
