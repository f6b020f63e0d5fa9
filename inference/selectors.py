"""Reads of usage: what a domain's requests cost, by model and by token, never their content."""

import datetime

from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.utils import timezone

from domains import permissions
from domains.models import Domain, Membership
from inference.models import UsageEvent


def usage_reader(*, domain: Domain, user_id: int) -> int | None:
    """Whose usage a reader sees: None for the whole domain's, else their own user id.

    Decided by the member's role, never by the rights in force: a token narrowed to
    `usage:read` must not turn a member, whose role uses models, into a reader of the whole
    domain. Readers of the whole domain are those whose role audits it (admins) or holds no
    inference right of its own (viewers); every other member sees their own tokens' usage.
    """
    membership = (
        Membership.objects.filter(domain=domain, user_id=user_id).select_related("role").first()
    )
    role = membership.role.permission_set if membership else frozenset()
    uses_models = any(p in role for p in permissions.INFERENCE)
    whole_domain = permissions.AUDIT_READ in role or not uses_models
    return None if membership and whole_domain else user_id


def usage_events(*, domain: Domain, user_id: int | None, days: int) -> QuerySet[UsageEvent]:
    """The domain's usage events of the last `days` days, limited to one user when given."""
    since = timezone.now() - datetime.timedelta(days=days)
    events = UsageEvent.objects.filter(domain=domain, created_at__gte=since)
    return events if user_id is None else events.filter(user_id=user_id)


def usage_summary(*, domain: Domain, user_id: int | None, days: int) -> dict:
    """Totals, per model and per token, for the usage page and API."""
    events = usage_events(domain=domain, user_id=user_id, days=days)
    measures = {
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status__gte=400)),
        "prompt_tokens": Sum("prompt_tokens", default=0),
        "completion_tokens": Sum("completion_tokens", default=0),
        "total_tokens": Sum("total_tokens", default=0),
        "avg_latency_ms": Avg("latency_ms", default=0),
    }

    def rows(field: str) -> list[dict]:
        return [
            {**row, "avg_latency_ms": round(row["avg_latency_ms"], 1)}
            for row in events.values(field).annotate(**measures).order_by("-requests", field)
        ]

    totals = events.aggregate(**measures)
    totals["avg_latency_ms"] = round(totals["avg_latency_ms"], 1)
    return {
        "days": days,
        "scope": "own" if user_id is not None else "domain",
        "totals": totals,
        "by_model": rows("model"),
        "by_token": rows("token_id"),
    }
