"""CORS for the OpenAI-compatible API: browser pages of the origins a domain's admins allow.

A domain allows no origin by default (`Domain.cors_origins`, edited on its settings page, in
the management API and the admin). For an allowed origin, a preflight (`OPTIONS` with
`Access-Control-Request-Method`) is answered here, before authentication (a browser sends
no credentials with it), and every actual answer carries `Access-Control-Allow-Origin` and
the headers a client may read. Any other origin gets no CORS header at all, so the browser
withholds the answer from the page; its preflight goes on to the API, whose answer to
`OPTIONS` is a 405 in OpenAI's envelope. The allowed origins come from the routing snapshot
(`inference.registry`), so this costs no query on the request path.
"""

import re
import uuid

from inference.registry import registry

DOMAIN_PATH = re.compile(r"^/proxy/([0-9A-Fa-f-]{32,36})(/|$)")
# The headers of an answer a page may read: the request id, limits, the backend's attestation.
EXPOSED = (
    b"x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
    b"x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, "
    b"x-ratelimit-reset-tokens, x-cube-backend-attestation, x-cube-tee, x-cube-confidential"
)
DEFAULT_ALLOWED_HEADERS = b"authorization, content-type, x-request-id"
HEADER_NAMES = re.compile(rb"^[A-Za-z0-9-]+(\s*,\s*[A-Za-z0-9-]+){0,49}$")
ALLOWED_METHODS = b"GET, POST"
MAX_AGE = b"600"


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


async def allowed_origin(scope) -> bytes | None:
    """The request's `Origin` if the domain of its path allows it, else None."""
    origin = _header(scope, b"origin")
    match = DOMAIN_PATH.match(scope["path"])
    if origin is None or match is None:
        return None
    try:
        domain_id = str(uuid.UUID(match.group(1)))
        text = origin.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    snapshot = await registry.current()
    return origin if text in snapshot.cors.get(domain_id, ()) else None


class CORS:
    """ASGI middleware of the API: preflights and response headers for allowed origins."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        origin = await allowed_origin(scope)
        if origin is None:
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            return await self._preflight(scope, send, origin)

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], *self._cors(origin)]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    def _cors(origin: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", EXPOSED),
            (b"vary", b"Origin"),
        ]

    async def _preflight(self, scope, send, origin: bytes) -> None:
        asked = _header(scope, b"access-control-request-headers") or b""
        headers = asked.strip() if HEADER_NAMES.match(asked.strip()) else DEFAULT_ALLOWED_HEADERS
        request_id = f"req_{uuid.uuid4().hex}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *self._cors(origin),
                    (b"access-control-allow-methods", ALLOWED_METHODS),
                    (b"access-control-allow-headers", headers),
                    (b"access-control-max-age", MAX_AGE),
                    (b"allow", ALLOWED_METHODS),
                    (b"x-request-id", request_id),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
