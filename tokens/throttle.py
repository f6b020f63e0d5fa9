"""Failed authentications per client address, shared by both APIs.

Someone guessing tokens fails; after `CUBEAI_AUTH_FAILURES_PER_MINUTE` failures from one
address in a one-minute window, every further attempt from it is refused with 429 until the
window ends, before any token is parsed or looked up. IPv6 addresses count per /64, the
block one machine usually holds. The counters live in the cache: Redis when it is
configured, so every replica shares them; process memory on the embedded default (each web
process then counts on its own).

Behind a load balancer, uvicorn must be told to trust its `X-Forwarded-For`
(`--proxy-headers --forwarded-allow-ips <balancer>`), or every client is the balancer; and
the balancer must set that header to the address it saw, not append to the client's own
(nginx: `$remote_addr`, not `$proxy_add_x_forwarded_for`), or a client picks its address.
HTTP callers pass the request's address, "" when it has none; only internal callers, which
have no client, pass None and are neither counted nor refused.
"""

import ipaddress
import time

from django.conf import settings
from django.core.cache import cache

from cubeai.exceptions import DomainError

WINDOW_SECONDS = 60
REFUSAL = "Too many failed authentications from your address."


class TooManyFailures(DomainError):
    """Too many failed authentications from the caller's address; retry after a while."""

    status = 429
    code = "too_many_failed_authentications"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed authentications from your address. Retry after {retry_after} seconds."
        )
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


# The one counter of every address that does not parse (an empty one, or whatever a client
# managed to put in a forwarded header): such callers share their failures, so a malformed
# address never escapes the limit.
UNPARSEABLE = "unparseable"


def _client(address: str | None) -> str | None:
    """The counted unit of an address: itself (IPv4), its /64 (IPv6), `UNPARSEABLE` for
    anything else; None only for None, which internal callers (no client) pass."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return UNPARSEABLE
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _window() -> tuple[str, int]:
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    return str(window), WINDOW_SECONDS - int(now % WINDOW_SECONDS)


def auth_failures_check(*, address: str | None) -> None:
    """Raise `TooManyFailures` if the address used up its failures in this window."""
    client = _client(address)
    if client is None:
        return
    window, remaining = _window()
    failures = cache.get(f"authfail:{client}:{window}", 0)
    if failures >= settings.CUBEAI_AUTH_FAILURES_PER_MINUTE:
        raise TooManyFailures(remaining)


def auth_failure_record(*, address: str | None) -> None:
    """Count one failed authentication from the address."""
    client = _client(address)
    if client is None:
        return
    window, _ = _window()
    key = f"authfail:{client}:{window}"
    # add() is a no-op when the counter exists; incr() is atomic on Redis and in memory.
    cache.add(key, 0, WINDOW_SECONDS * 2)
    try:
        cache.incr(key)
    except ValueError:
        # Evicted between the two calls: start again at one.
        cache.set(key, 1, WINDOW_SECONDS * 2)
