"""Per-request audit records: who called which model through which token and backend, with
what outcome, guardrail decision and attestation state — read from the usage events, which
never hold any text. Kept for the raw events' retention window
(`CUBEAI_RETENTION_USAGE_DAYS`); the daily aggregates (`inference/usage.py`) outlive them.
"""

import datetime
from collections.abc import Iterable, Iterator

from django.db.models import Q, QuerySet

from domains.models import Domain
from inference.models import Model, UsageEvent
from inference.usage import UNKNOWN_MODEL

OUTCOMES = ("success", "error", "blocked")
COLUMNS = (
    "created_at",
    "request_id",
    "actor",
    "token",
    "endpoint",
    "model",
    "backend",
    "status",
    "guardrails",
    "attestation",
    "latency_ms",
    "total_tokens",
)


def request_events(
    *,
    domain: Domain,
    actor: str = "",
    token: str = "",
    model: str = "",
    outcome: str = "",
    start: datetime.date | None = None,
    end: datetime.date | None = None,
) -> QuerySet[UsageEvent]:
    """The domain's requests, newest first, filtered by the caller's email, the token's
    name, the model, the outcome (`success`, `error`: 4xx and 5xx, `blocked`: refused by
    the input guardrails) and days (UTC, inclusive)."""
    events = UsageEvent.objects.filter(domain=domain).select_related("user")
    if actor:
        events = events.filter(user__email__iexact=actor)
    if token:
        from tokens.models import Token

        ids = Token.objects.filter(name=token).values_list("pk", flat=True)
        events = events.filter(token_id__in=list(ids))
    if model == UNKNOWN_MODEL:
        events = events.exclude(model__in=Model.objects.values("name"))
    elif model:
        events = events.filter(model=model)
    if outcome == "success":
        events = events.filter(status__lt=400)
    elif outcome == "error":
        events = events.filter(status__gte=400)
    elif outcome == "blocked":
        events = events.filter(Q(guardrails__input__action="block"))
    if start is not None:
        events = events.filter(created_at__date__gte=start)
    if end is not None:
        events = events.filter(created_at__date__lte=end)
    return events.order_by("-created_at", "-id")


def guardrail_decision(audit: dict) -> str:
    """One word for a request's guardrail audit: blocked, masked, allowed (or empty)."""
    actions = []
    if isinstance(audit.get("input"), dict):
        actions.append(audit["input"].get("action"))
    for output in audit.get("output") or []:
        if isinstance(output, dict):
            actions.append(output.get("action"))
    if "block" in actions:
        return "blocked"
    if "mask" in actions:
        return "masked"
    return "allowed" if actions else ""


def request_rows(events: Iterable[UsageEvent]) -> Iterator[dict]:
    """The records as the page, the CSV and the API show them: token names, and known
    model names only (a name the client sent that no model has is "unknown model")."""
    from tokens.models import Token

    events = list(events)
    known = set(Model.objects.values_list("name", flat=True))
    names = dict(
        Token.objects.filter(pk__in={e.token_id for e in events if e.token_id}).values_list(
            "pk", "name"
        )
    )
    for event in events:
        yield {
            "created_at": event.created_at.isoformat(),
            "request_id": event.request_id,
            "actor": event.user.email if event.user else "",
            "token_id": event.token_id,
            "token": names.get(event.token_id, "(deleted token)") if event.token_id else "",
            "endpoint": event.endpoint,
            "model": event.model if event.model in known else UNKNOWN_MODEL,
            "backend": event.backend,
            "status": event.status,
            "guardrails": guardrail_decision(event.guardrails or {}),
            "attestation": event.attestation,
            "latency_ms": round(event.latency_ms, 1),
            "total_tokens": event.total_tokens,
        }


def request_rows_all(events: QuerySet[UsageEvent], chunk: int = 2000) -> Iterator[dict]:
    """Every record of a (large) query, read a chunk at a time, for the CSV export."""
    batch: list[UsageEvent] = []
    for event in events.iterator(chunk_size=chunk):
        batch.append(event)
        if len(batch) >= chunk:
            yield from request_rows(batch)
            batch = []
    yield from request_rows(batch)
