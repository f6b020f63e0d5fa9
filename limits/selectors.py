"""Reading limits and budgets, for pages and the management API (the overview too)."""

from dataclasses import asdict, dataclass

from asgiref.sync import async_to_sync
from django.db.models import Q, QuerySet

from domains.models import Domain
from limits import gate
from limits.models import TokenLimits


@dataclass(frozen=True)
class Budget:
    """A monthly token budget this month: `budget` None when there is none."""

    budget: int | None
    used: int | None
    remaining: int | None
    percent: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _budget(limit: int, used: int | None) -> Budget:
    if not limit:
        return Budget(None, used, None, None)
    if used is None:
        return Budget(limit, None, None, None)
    return Budget(limit, used, max(0, limit - used), round(min(100.0, 100 * used / limit), 1))


def budget_used(domain_id, token_id: int | None = None) -> int | None:
    """Tokens charged this month (None while the store is unreachable)."""
    return async_to_sync(gate.budget_used)(str(domain_id), token_id)


def domain_budget(*, domain: Domain) -> Budget:
    """The domain's monthly budget, used and remaining: for the overview and limits page."""
    limits = gate.resolve(str(domain.pk), 0)
    return _budget(limits.domain_budget, budget_used(domain.pk))


def domain_limits(*, domain: Domain) -> dict:
    """What is in force for the domain: its own fields, the effective values, the budget."""
    from limits.models import DomainLimits

    row = DomainLimits.objects.filter(domain=domain).first()
    effective = gate.resolve(str(domain.pk), 0)
    return {
        "configured": {
            field: getattr(row, field) if row else None
            for field in (
                "requests_per_minute",
                "tokens_per_minute",
                "monthly_token_budget",
                "token_requests_per_minute",
                "token_tokens_per_minute",
                "token_concurrent_streams",
                "token_monthly_token_budget",
            )
        }
        | {"failure_mode": row.failure_mode if row else "open"},
        "effective": {
            "requests_per_minute": effective.domain_rpm,
            "tokens_per_minute": effective.domain_tpm,
            "token_requests_per_minute": effective.token_rpm,
            "token_tokens_per_minute": effective.token_tpm,
            "token_concurrent_streams": effective.token_streams,
        },
        "budget": _budget(effective.domain_budget, budget_used(domain.pk)).as_dict(),
    }


def domain_tokens(*, domain: Domain) -> QuerySet:
    """The active tokens that may act in the domain: its members' tokens for all their
    domains or naming this one, by name."""
    from domains.models import Membership
    from tokens.models import Token

    members = Membership.objects.filter(domain=domain).values("user_id")
    return (
        Token.objects.active()
        .filter(owner_id__in=members)
        .filter(Q(all_domains=True) | Q(domains=domain))
        .distinct()
        .select_related("owner")
        .order_by("name", "pk")
    )


def token_limits_owner(*, domain: Domain, user_id: int, granted: frozenset[str]) -> int | None:
    """Whose tokens' limits and budgets a reader sees: None for every token in the domain,
    else the reader's own user id. Those who may change any token's limits (domain:manage
    in force) see them all; everyone else whatever their usage visibility allows
    (`inference.selectors.usage_reader`): a member only their own tokens."""
    from domains import permissions
    from inference.selectors import usage_reader

    if permissions.DOMAIN_MANAGE in granted:
        return None
    return usage_reader(domain=domain, user_id=user_id)


def token_limits_list(*, domain: Domain, owner_id: int | None = None) -> list[dict]:
    """Tokens with their own limits in the domain, and, while the domain sets a per-token
    monthly budget, every other token that may act in it too (`own_limits` false): each
    with its effective budget, used and remaining this month.

    `owner_id` narrows the rows to that user's tokens: a reader's own, as decided by
    `inference.selectors.usage_reader` (None: the whole domain's)."""
    limits = TokenLimits.objects.filter(domain=domain).select_related("token")
    candidates = domain_tokens(domain=domain)
    if owner_id is not None:
        limits = limits.filter(token__owner_id=owner_id)
        candidates = candidates.filter(owner_id=owner_id)
    rows = {row.token_id: row for row in limits}
    tokens = {row.token_id: row.token for row in rows.values()}
    if gate.resolve(str(domain.pk), 0).token_budget:
        tokens.update({token.pk: token for token in candidates})
    found = []
    for token_id in sorted(tokens):
        row = rows.get(token_id)
        effective = gate.resolve(str(domain.pk), token_id)
        found.append(
            {
                "token": token_id,
                "token_name": tokens[token_id].name,
                "own_limits": row is not None,
                "requests_per_minute": row.requests_per_minute if row else None,
                "tokens_per_minute": row.tokens_per_minute if row else None,
                "concurrent_streams": row.concurrent_streams if row else None,
                "monthly_token_budget": row.monthly_token_budget if row else None,
                "budget": _budget(
                    effective.token_budget, budget_used(domain.pk, token_id)
                ).as_dict(),
            }
        )
    return found


def token_budgets(*, domain: Domain, owner) -> list[dict]:
    """The owner's tokens that have a monthly budget in the domain (their own or the
    domain's per-token one), each with its budget used and left this month."""
    found = []
    for token in domain_tokens(domain=domain).filter(owner=owner):
        limit = gate.resolve(str(domain.pk), token.pk).token_budget
        if limit:
            budget = _budget(limit, budget_used(domain.pk, token.pk))
            found.append({"token": token.pk, "token_name": token.name, "budget": budget.as_dict()})
    return found
