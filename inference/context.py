"""Who is calling, in which domain, with which rights: resolved once per request.

Steps 1-3 of the request flow (authenticate, resolve the domain, authorize) run here for
every entry point: a personal access token for the API (`caller_for`), a signed-in browser
session for the chat's WebSocket consumer (`session_caller`). Verified tokens are kept in
process memory for `CUBEAI_AUTH_CACHE_SECONDS` (1 s by default), keyed by a hash of the
whole token, so a revocation, a removed membership or a role change is seen within that
bound plus the token cache's own (both 1 s by default), and the hot path does no database
work in between. A session's membership is read on every chat message, never cached.
"""

import hashlib
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from cubeai.exceptions import AuthenticationFailed, NotFound, PermissionDenied
from domains.selectors import membership_for, membership_rights
from inference import offpath
from tokens import services as token_services


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified token, or a signed-in user's browser session (`token_id` None, kind
    `session`), acting in one domain."""

    token_id: int | None
    user_id: int
    key_id: str
    domain_id: str
    permissions: frozenset[str]
    kind: str = "token"

    def require(self, permission: str) -> None:
        """Raise unless the caller holds `permission` in the domain."""
        if permission not in self.permissions:
            raise PermissionDenied(
                f"Your token or role does not allow `{permission}` in this domain."
            )


def resolve(raw_token: str, domain_id: str, client_ip: str | None) -> Caller:
    """Authenticate and authorize synchronously (runs off the event loop on a cache miss)."""
    principal = token_services.token_authenticate(raw_token, client_ip=client_ip)
    membership = membership_for(
        user_id=principal.owner_id, domain_id=domain_id, principal=principal
    )
    if membership is None:
        raise NotFound("Domain not found.")
    # Every API call counts as a change: a frozen domain serves no API traffic.
    rights = membership_rights(membership, principal=principal, write=True)
    token_services.token_touch(principal=principal, ip=client_ip)
    return Caller(
        token_id=principal.token_id,
        user_id=principal.owner_id,
        key_id=principal.key_id,
        domain_id=domain_id,
        permissions=rights,
    )


_cache: dict[tuple[bytes, str], tuple[float, Caller]] = {}
_CACHE_LIMIT = 10_000


async def caller_for(raw_token: str | None, domain_id: str, client_ip: str | None) -> Caller:
    """The cached Caller for this token and domain, resolving it on a miss."""
    if not raw_token:
        raise AuthenticationFailed()
    key = (hashlib.sha256(raw_token.encode()).digest(), domain_id)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    # On the auth executor: a miss never queues behind a metering flush or a routing rebuild.
    caller = await offpath.run("auth", resolve, raw_token, domain_id, client_ip)
    if settings.CUBEAI_AUTH_CACHE_SECONDS <= 0:
        return caller
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[key] = (now + settings.CUBEAI_AUTH_CACHE_SECONDS, caller)
    return caller


def _session_resolve(user_id: int, domain_id: str) -> Caller:
    membership = membership_for(user_id=user_id, domain_id=domain_id)
    if membership is None:
        raise NotFound("Domain not found.")
    # Inference counts as a change, as for a token: a frozen domain serves none.
    rights = membership_rights(membership, write=True)
    return Caller(
        token_id=None,
        user_id=user_id,
        key_id="",
        domain_id=domain_id,
        permissions=rights,
        kind="session",
    )


async def session_caller(user, domain_id: str) -> Caller:
    """The Caller of a signed-in user's browser session in a domain, read afresh (no cache:
    a removed membership or a changed role is seen on the next message). Raises NotFound
    for a user who is not an active member, PermissionDenied as `membership_rights` says."""
    if user is None or not user.is_authenticated:
        raise NotFound("Domain not found.")
    return await database_sync_to_async(_session_resolve)(user.pk, domain_id)
