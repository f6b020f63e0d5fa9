"""Who is calling, in which domain, with which rights: resolved once per request.

Steps 1-3 of the request flow (authenticate, resolve the domain, authorize) run here for
every entry point: a personal access token for the API (`caller_for`), a signed-in browser
session for the chat's WebSocket consumer (`session_caller`). Verified tokens are kept in
process memory for `CUBEAI_AUTH_CACHE_SECONDS` (1 s by default), keyed by a hash of the
whole token, so a revocation, a removed membership or a role change is seen within that
bound plus the token cache's own (both 1 s by default), and the hot path does no database
work in between. An entry past half its life is served and resolved again in the
background, so steady traffic never waits for a miss; concurrent misses of one token share
one resolution (before, at c=64 every request of the second after an expiry queued behind
dozens of identical lookups). A session's membership is read on every chat message, never
cached.
"""

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from cubeai.exceptions import AuthenticationFailed, NotFound, PermissionDenied
from domains.selectors import membership_for, membership_rights
from inference import offpath
from tokens import services as token_services

log = logging.getLogger(__name__)


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


Key = tuple[bytes, str]
_cache: dict[Key, tuple[float, Caller]] = {}
_CACHE_LIMIT = 10_000
# Resolutions in flight, one per key: later misses await the same one.
_resolving: dict[Key, asyncio.Task] = {}


async def caller_for(raw_token: str | None, domain_id: str, client_ip: str | None) -> Caller:
    """The cached Caller for this token and domain, resolving it on a miss."""
    if not raw_token:
        raise AuthenticationFailed()
    key = (hashlib.sha256(raw_token.encode()).digest(), domain_id)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        if hit[0] - now < settings.CUBEAI_AUTH_CACHE_SECONDS / 2 and key not in _resolving:
            _resolution(key, raw_token, domain_id, client_ip).add_done_callback(_refreshed(key))
        return hit[1]
    return await asyncio.shield(_resolution(key, raw_token, domain_id, client_ip))


def _resolution(key: Key, raw_token: str, domain_id: str, client_ip: str | None) -> asyncio.Task:
    """The resolution of `key` in flight on this loop, or a new one."""
    task = _resolving.get(key)
    if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
        return task
    task = asyncio.get_running_loop().create_task(_resolve(key, raw_token, domain_id, client_ip))
    # Its error reaches whoever awaits it; one that nobody awaits anymore is not logged.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    _resolving[key] = task
    return task


async def _resolve(key: Key, raw_token: str, domain_id: str, client_ip: str | None) -> Caller:
    try:
        # On the auth executor: never queued behind a metering flush or a routing rebuild.
        caller = await offpath.run("auth", resolve, raw_token, domain_id, client_ip)
    finally:
        if _resolving.get(key) is asyncio.current_task():
            del _resolving[key]
    if settings.CUBEAI_AUTH_CACHE_SECONDS > 0:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = (time.monotonic() + settings.CUBEAI_AUTH_CACHE_SECONDS, caller)
    return caller


def _refreshed(key: Key):
    def done(task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, AuthenticationFailed | NotFound | PermissionDenied):
            # Revoked, expired, removed or narrowed: the next request resolves (and fails).
            _cache.pop(key, None)
        elif error is not None:
            # The database away, say: the entry serves until it expires, as any other.
            log.warning("auth: background refresh failed: %s", type(error).__name__)

    return done


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
