"""Issuing, verifying, rotating and revoking personal access tokens."""

import datetime
import ipaddress
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cubeai.exceptions import AuthenticationFailed, Conflict, DomainError
from domains import permissions
from domains.models import Domain, Membership, User
from domains.services import audit_record
from tokens import keys, throttle
from tokens.models import Token

DEMO_TOKEN_NAME = "Demo token"  # noqa: S105 -- a display name.
MAX_GRACE_SECONDS = 7 * 24 * 3600


class TokenInvalid(DomainError):
    """The token request has invalid fields; `errors` maps each field to its messages."""

    status = 400
    code = "invalid_token_request"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified token, as the request path needs it."""

    token_id: int
    owner_id: int
    key_id: str
    scopes: frozenset[str]
    all_domains: bool
    domain_ids: frozenset[str]
    expires_at: datetime.datetime

    def may_act_in(self, domain_id: str) -> bool:
        return self.all_domains or domain_id in self.domain_ids


def _owner_permissions(owner: User, domains: list[Domain] | None) -> frozenset[str]:
    memberships = Membership.objects.filter(user=owner, domain__deleted_at__isnull=True)
    if domains is not None:
        memberships = memberships.filter(domain__in=domains)
    granted: set[str] = set()
    for membership in memberships.select_related("role"):
        granted |= membership.role.permission_set
    return frozenset(granted)


def _validate(
    *,
    owner: User,
    name: str,
    scopes: list[str],
    domains: list[Domain] | None,
    expires_at: datetime.datetime | None,
) -> list[str]:
    errors: dict[str, list[str]] = {}
    if not name or not name.strip():
        errors["name"] = ["A name is required."]
    elif len(name) > 100:
        errors["name"] = ["At most 100 characters."]
    now = timezone.now()
    if expires_at is None:
        errors["expires_at"] = ["An expiry is required."]
    elif expires_at <= now:
        errors["expires_at"] = ["The expiry must be in the future."]
    elif expires_at > now + datetime.timedelta(days=settings.CUBEAI_TOKEN_MAX_DAYS):
        errors["expires_at"] = [f"At most {settings.CUBEAI_TOKEN_MAX_DAYS} days from now."]
    if domains is not None:
        member_of = set(
            Membership.objects.filter(user=owner, domain__in=domains).values_list(
                "domain_id", flat=True
            )
        )
        if not domains or any(d.pk not in member_of or d.is_deleted for d in domains):
            errors["domains"] = ["Choose domains you are a member of."]
    unknown = set(scopes) - set(permissions.ALL)
    if not scopes:
        errors["scopes"] = ["Choose at least one scope."]
    elif unknown:
        errors["scopes"] = [f"Unknown scopes: {', '.join(sorted(unknown))}."]
    elif "domains" not in errors:
        missing = set(scopes) - _owner_permissions(owner, domains)
        if missing:
            errors["scopes"] = [f"You do not hold: {', '.join(sorted(missing))}."]
    if errors:
        raise TokenInvalid(errors)
    return sorted(set(scopes))


def token_domains_resolve(*, owner: User, domain_ids: list[str]) -> list[Domain]:
    """The live domains with these ids that the owner belongs to, or TokenInvalid.

    Unknown ids and other tenants' domains give the same message, so the answer does not
    reveal which domains exist.
    """
    invalid = TokenInvalid({"domains": ["Choose domains you are a member of."]})
    try:
        wanted = {uuid.UUID(str(domain_id)) for domain_id in domain_ids}
    except ValueError:
        raise invalid from None
    domains = list(Domain.objects.for_user(owner).filter(pk__in=wanted))
    if not wanted or len(domains) != len(wanted):
        raise invalid
    return domains


def default_expiry() -> datetime.datetime:
    return timezone.now() + datetime.timedelta(days=settings.CUBEAI_TOKEN_DEFAULT_DAYS)


@transaction.atomic
def token_issue(
    *,
    owner: User,
    name: str,
    scopes: list[str],
    expires_at: datetime.datetime | None,
    domains: list[Domain] | None = None,
    description: str = "",
) -> tuple[Token, str]:
    """Create a token; returns it with the secret string, which is never stored or shown again.

    `domains=None` lets the token act in every domain of its owner, now and later.
    """
    scopes = _validate(
        owner=owner, name=name, scopes=scopes, domains=domains, expires_at=expires_at
    )
    plaintext, parsed = keys.generate()
    pepper_id = keys.current_pepper_id()
    token = Token.objects.create(
        owner=owner,
        name=name.strip(),
        description=description,
        key_id=parsed.key_id,
        digest=keys.digest(parsed, pepper_id),
        pepper_id=pepper_id,
        scopes=scopes,
        all_domains=domains is None,
        expires_at=expires_at,
    )
    if domains is not None:
        token.domains.set(domains)
    _audit(token, "token.issue", scopes=scopes, expires_at=token.expires_at.isoformat())
    # A key id probed before it existed would still be cached as unknown; forget it.
    _forget(token)
    transaction.on_commit(lambda: _forget(token))
    return token, plaintext


@transaction.atomic
def token_issue_demo(*, owner: User, domain: Domain) -> str:
    """Issue a fresh demo token for the demo domain, revoking earlier demo tokens."""
    for old in Token.objects.for_owner(owner).filter(name=DEMO_TOKEN_NAME, revoked_at=None):
        token_revoke(token=old)
    _, plaintext = token_issue(
        owner=owner,
        name=DEMO_TOKEN_NAME,
        scopes=sorted(permissions.BUILTIN_ROLES[permissions.MEMBER]),
        domains=[domain],
        expires_at=default_expiry(),
        description="Issued by bootstrap_demo.",
    )
    return plaintext


def _audit(token: Token, action: str, **details) -> None:
    """Record a token's lifecycle in the audit trail of each domain it may act in (names and
    ids only: never the secret or its digest)."""
    if token.all_domains:
        domains = Domain.objects.for_user(token.owner)
    else:
        domains = token.domains.filter(deleted_at__isnull=True)
    for domain in domains:
        audit_record(
            None,
            domain,
            action,
            token.name,
            user=token.owner,
            token=token.pk,
            key_id=token.key_id,
            **details,
        )


def _forget(token: Token) -> None:
    cache.delete(_cache_key(token.key_id))


@transaction.atomic
def token_rotate(*, token: Token, grace_seconds: int = 0) -> str:
    """Give the token a new secret; the old one stops at once or after a grace period."""
    # Lock the row and re-read it: a revocation that landed meanwhile must be seen.
    list(Token.objects.select_for_update().filter(pk=token.pk).values_list("pk"))
    token.refresh_from_db()
    if token.status != Token.Status.ACTIVE:
        raise Conflict("Only an active token can be rotated.", param="token")
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise TokenInvalid({"grace_seconds": ["The grace period must be between 0 and 7 days."]})
    _, fresh = keys.generate()
    parsed = keys.ParsedToken(token.key_id, fresh.secret)
    plaintext = keys.compose(parsed)
    now = timezone.now()
    if grace_seconds:
        token.previous_digest, token.previous_pepper_id = token.digest, token.pepper_id
        token.previous_valid_until = now + datetime.timedelta(seconds=grace_seconds)
    else:
        token.previous_digest, token.previous_pepper_id, token.previous_valid_until = "", "", None
    token.pepper_id = keys.current_pepper_id()
    token.digest = keys.digest(parsed, token.pepper_id)
    token.rotated_at = now
    token.save(
        update_fields=[
            "digest",
            "pepper_id",
            "previous_digest",
            "previous_pepper_id",
            "previous_valid_until",
            "rotated_at",
        ]
    )
    _audit(token, "token.rotate", grace_seconds=grace_seconds)
    # Now, and again once committed, so no replica caches the old secret in between.
    _forget(token)
    transaction.on_commit(lambda: _forget(token))
    return plaintext


@transaction.atomic
def token_revoke(*, token: Token) -> Token:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        _audit(token, "token.revoke")
    _forget(token)
    transaction.on_commit(lambda: _forget(token))
    return token


@transaction.atomic
def token_delete(*, token: Token) -> None:
    _audit(token, "token.delete")
    # Deleted first: a request in between must not cache the token again.
    token.delete()
    _forget(token)
    transaction.on_commit(lambda: _forget(token))


def _cache_key(key_id: str) -> str:
    return f"pat:{key_id}"


_RECORD_FIELDS = (
    "id",
    "owner_id",
    "digest",
    "pepper_id",
    "previous_digest",
    "previous_pepper_id",
    "previous_valid_until",
    "scopes",
    "all_domains",
    "expires_at",
)


def _load(key_id: str) -> dict | None:
    """The verification record of a key id, from the cache or the database."""
    key = _cache_key(key_id)
    record = cache.get(key)
    if record is not None:
        return record or None
    # The same two queries run whether the key id exists or not, and neither builds model
    # instances, so the database path does not reveal which key ids exist by its timing.
    live = Token.objects.filter(key_id=key_id, revoked_at__isnull=True)
    row = live.values(*_RECORD_FIELDS).first()
    domain_ids = [
        str(domain_id)
        for domain_id in Token.domains.through.objects.filter(token__in=live).values_list(
            "domain_id", flat=True
        )
    ]
    if row is None:
        # Unknown (or revoked) key ids are cached as {} for longer than live records: a
        # key id is random, so none of them will exist later (`token_issue` forgets the
        # entry of its own anyway), and a token that passes the checksum but names no key
        # must not cost database queries again and again.
        cache.set(key, {}, settings.CUBEAI_TOKEN_NEGATIVE_CACHE_SECONDS)
        return None
    record = {**row, "scopes": list(row["scopes"]), "domain_ids": domain_ids}
    cache.set(key, record, settings.CUBEAI_TOKEN_CACHE_SECONDS)
    return record


# Unknown key ids are compared against this, so they cost the same HMAC as a wrong secret.
_DUMMY_DIGEST = "0" * 64


def token_authenticate(raw: str, *, client_ip: str | None = None) -> Principal:
    """Verify a Bearer token string; the same error for every kind of failure.

    With the client's address, failures are counted and an address over its limit is
    refused (`throttle.TooManyFailures`) before anything is looked up.
    """
    throttle.auth_failures_check(address=client_ip)
    try:
        return _verify(raw)
    except AuthenticationFailed:
        throttle.auth_failure_record(address=client_ip)
        raise


def _verify(raw: str) -> Principal:
    parsed = keys.parse(raw)
    if parsed is None:
        raise AuthenticationFailed()
    record = _load(parsed.key_id)
    now = timezone.now()
    if record is None:
        keys.matches(parsed, keys.current_pepper_id(), _DUMMY_DIGEST)
        raise AuthenticationFailed()
    ok = keys.matches(parsed, record["pepper_id"], record["digest"])
    if not ok and record["previous_digest"] and record["previous_valid_until"] > now:
        ok = keys.matches(parsed, record["previous_pepper_id"], record["previous_digest"])
    if not ok or record["expires_at"] <= now:
        raise AuthenticationFailed()
    return Principal(
        token_id=record["id"],
        owner_id=record["owner_id"],
        key_id=parsed.key_id,
        scopes=frozenset(record["scopes"]),
        all_domains=record["all_domains"],
        domain_ids=frozenset(record["domain_ids"]),
        expires_at=record["expires_at"],
    )


def token_touch(*, principal: Principal, ip: str | None) -> None:
    """Record last use, at most once a minute per token across all replicas; an address
    that does not parse is recorded as unknown (PostgreSQL's inet column would refuse it)."""
    try:
        ip = str(ipaddress.ip_address(ip or ""))
    except ValueError:
        ip = None
    now = timezone.now()
    throttle_key = f"pat-used:{principal.key_id}"
    if not cache.add(throttle_key, 1, settings.CUBEAI_TOKEN_LAST_USED_INTERVAL):
        return
    threshold = now - datetime.timedelta(seconds=settings.CUBEAI_TOKEN_LAST_USED_INTERVAL)
    Token.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=threshold), pk=principal.token_id
    ).update(last_used_at=now, last_used_ip=ip)


def tokens_expire_and_warn() -> dict[str, int]:
    """Periodic job: forget expired tokens' cache entries and warn owners of tokens expiring soon."""
    from django.core.mail import send_mail

    now = timezone.now()
    expired = Token.objects.filter(
        revoked_at__isnull=True,
        expires_at__lte=now,
        expires_at__gt=now - datetime.timedelta(days=2),
    )
    for token in expired:
        _forget(token)
    soon = now + datetime.timedelta(days=settings.CUBEAI_TOKEN_EXPIRY_WARNING_DAYS)
    warned = 0
    for token in (
        Token.objects.active()
        .filter(expires_at__lte=soon, expiry_warned_at__isnull=True)
        .select_related("owner")
    ):
        send_mail(
            subject=f"Your Cube AI token “{token.name}” expires soon",
            message=(
                f"Your personal access token “{token.name}” ({token.display}) expires on "
                f"{token.expires_at:%Y-%m-%d %H:%M} UTC. Rotate it or create a new one under "
                "Profile → Personal Access Tokens."
            ),
            from_email=None,
            recipient_list=[token.owner.email],
        )
        Token.objects.filter(pk=token.pk).update(expiry_warned_at=now)
        warned += 1
    return {"expired": expired.count(), "warned": warned}
