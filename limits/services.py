"""Changing limits: validated here once, for the page, the management API and the admin."""

from django.db import transaction

from cubeai.exceptions import PermissionDenied
from domains import permissions
from domains.models import Domain
from domains.selectors import Actor
from domains.services import Invalid, audit_record
from limits.models import DomainLimits, FailureMode, TokenLimits
from limits.platform import Platform, platform_limits

RATE_FIELDS = ("requests_per_minute", "token_requests_per_minute")
TPM_FIELDS = ("tokens_per_minute", "token_tokens_per_minute")
STREAM_FIELDS = ("token_concurrent_streams", "concurrent_streams")
BUDGET_FIELDS = ("monthly_token_budget", "token_monthly_token_budget")
DOMAIN_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "monthly_token_budget",
    "token_requests_per_minute",
    "token_tokens_per_minute",
    "token_concurrent_streams",
    "token_monthly_token_budget",
)
TOKEN_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_streams",
    "monthly_token_budget",
)


def maximum(field: str, platform: Platform | None = None) -> int:
    """The platform's maximum for a field (staff set it in the admin's platform limits, else
    CUBEAI_LIMITS_MAX_*)."""
    platform = platform or platform_limits()
    if field in RATE_FIELDS:
        return platform.max_requests_per_minute
    if field in TPM_FIELDS:
        return platform.max_tokens_per_minute
    if field in STREAM_FIELDS:
        return platform.max_concurrent_streams
    return platform.max_monthly_token_budget


def clean_values(values: dict, fields: tuple[str, ...]) -> dict:
    """Each value empty (the default; no budget) or a whole number from 1 to the maximum;
    raises `Invalid` naming every bad field."""
    errors: dict[str, list[str]] = {}
    cleaned = {}
    platform = platform_limits()
    for field in fields:
        if field not in values:
            continue
        value = values[field]
        if value in (None, ""):
            cleaned[field] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                value = int(str(value).strip())
            except ValueError:
                errors[field] = ["Enter a whole number, or leave it empty."]
                continue
        top = maximum(field, platform)
        if value < 1:
            errors[field] = ["Must be at least 1 (leave it empty for the default)."]
        elif value > top:
            errors[field] = [f"Must be at most {top}, the platform's maximum."]
        else:
            cleaned[field] = value
    if errors:
        raise Invalid(errors)
    return cleaned


def _require(actor: Actor) -> None:
    if not actor.has(permissions.DOMAIN_MANAGE):
        raise PermissionDenied("Changing limits needs the domain:manage permission.")


@transaction.atomic
def domain_limits_set(*, actor: Actor, domain: Domain, **values) -> DomainLimits:
    """Change the domain's limits (only the fields given); audited."""
    _require(actor)
    unknown = set(values) - set(DOMAIN_FIELDS) - {"failure_mode"}
    if unknown:
        raise Invalid({name: ["Unknown field."] for name in sorted(unknown)})
    cleaned = clean_values(values, DOMAIN_FIELDS)
    if "failure_mode" in values:
        if values["failure_mode"] not in FailureMode.values:
            raise Invalid({"failure_mode": [f"Choose one of {', '.join(FailureMode.values)}."]})
        cleaned["failure_mode"] = values["failure_mode"]
    limits, _ = DomainLimits.objects.select_for_update().get_or_create(domain=domain)
    for field, value in cleaned.items():
        setattr(limits, field, value)
    limits.save()
    audit_record(actor, domain, "limits.changed", "domain", **cleaned)
    return limits


def _token_in_domain(domain: Domain, token_id) -> "object":
    from tokens.models import Token

    try:
        token = Token.objects.get(pk=int(token_id), owner__memberships__domain=domain)
    except (Token.DoesNotExist, TypeError, ValueError):
        raise Invalid({"token": ["Choose a token of a member of this domain."]}) from None
    if not token.all_domains and not token.domains.filter(pk=domain.pk).exists():
        raise Invalid({"token": ["This token may not act in this domain."]})
    return token


@transaction.atomic
def token_limits_set(*, actor: Actor, domain: Domain, token_id, **values) -> TokenLimits:
    """Set one token's limits in this domain (empty fields: the domain's per-token values)."""
    _require(actor)
    unknown = set(values) - set(TOKEN_FIELDS)
    if unknown:
        raise Invalid({name: ["Unknown field."] for name in sorted(unknown)})
    token = _token_in_domain(domain, token_id)
    cleaned = clean_values(values, TOKEN_FIELDS)
    limits, _ = TokenLimits.objects.select_for_update().get_or_create(domain=domain, token=token)
    for field, value in cleaned.items():
        setattr(limits, field, value)
    limits.save()
    audit_record(actor, domain, "limits.token_changed", f"token {token.pk}", **cleaned)
    return limits


@transaction.atomic
def token_limits_clear(*, actor: Actor, domain: Domain, token_id: int) -> None:
    _require(actor)
    deleted, _ = TokenLimits.objects.filter(domain=domain, token_id=token_id).delete()
    if deleted:
        audit_record(actor, domain, "limits.token_cleared", f"token {token_id}")
