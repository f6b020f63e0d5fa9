"""Usage at a glance: daily aggregates per domain, model, token and member, and their reads.

The metering flush (`inference.metering.write`, off the request path) adds each batch of
usage events to `UsageDaily` in the same transaction that inserts the events, so the
aggregates are as fresh as the raw rows; `usage_daily_rebuild` recomputes them from the raw
events (the migration that created the table, `manage.py usage_rollup`). Pages and the API
read only the aggregates, so a year of traffic is a few thousand rows whatever the volume.
Raw events are kept for the retention window only (`CUBEAI_RETENTION_USAGE_DAYS`).

Counts only, never content. A request for a model the domain may not use (or that does not
exist) counts under the empty model name, shown as "unknown model": the strings clients send
are never listed.
"""

import bisect
import datetime
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet, Sum
from django.utils import timezone

from domains.models import Domain, User
from inference.models import LATENCY_BUCKETS_MS, LATENCY_FIELDS, Model, UsageDaily, UsageEvent

UNKNOWN_MODEL = "unknown model"
MAX_RANGE_DAYS = 366 * 5
COUNTS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")
SUMS = (*COUNTS, "latency_ms_sum", *LATENCY_FIELDS)


def latency_bucket(latency_ms: float) -> int:
    """The index of the histogram bucket a latency falls in."""
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


def aggregate_events(events: Iterable[dict], known_models: set[str]) -> dict[tuple, dict]:
    """Sum events (dicts with UsageEvent's fields) per (domain, day, model, token, user)."""
    totals: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    zone = timezone.get_current_timezone()
    for event in events:
        created = event["created_at"]
        day = created.astimezone(zone).date() if created.tzinfo is not None else created.date()
        model = event.get("model") or ""
        key = (
            str(event["domain_id"]),
            day,
            model if model in known_models else "",
            event.get("token_id") or 0,
            event.get("user_id") or 0,
        )
        row = totals[key]
        row["requests"] += 1
        row["errors"] += 1 if event["status"] >= 400 else 0
        for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
            row[field] += int(event.get(field) or 0)
        latency = float(event.get("latency_ms") or 0)
        row["latency_ms_sum"] += latency
        row[LATENCY_FIELDS[latency_bucket(latency)]] += 1
    return totals


def known_model_names() -> set[str]:
    return set(Model.objects.values_list("name", flat=True))


def usage_daily_add(events: list[dict]) -> None:
    """Add a batch of usage events to the daily aggregates (call inside a transaction).

    Each key is an atomic increment, so flushes of several processes and replicas add up;
    keys are taken in sorted order so two flushes never wait on each other's rows in a cycle.
    """
    totals = aggregate_events(events, known_model_names())
    for key in sorted(totals, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
        domain_id, day, model, token_id, user_id = key
        values = {name: value for name, value in totals[key].items() if value}
        rows = UsageDaily.objects.filter(
            domain_id=domain_id, day=day, model=model, token_id=token_id, user_id=user_id
        )
        increments = {name: F(name) + value for name, value in values.items()}
        if rows.update(**increments):
            continue
        try:
            with transaction.atomic():
                UsageDaily.objects.create(
                    domain_id=domain_id,
                    day=day,
                    model=model,
                    token_id=token_id,
                    user_id=user_id,
                    **values,
                )
        except IntegrityError:
            # Another process created the row meanwhile: add to it instead.
            rows.update(**increments)


@transaction.atomic
def usage_daily_rebuild(*, since: datetime.date | None = None) -> int:
    """Recompute the aggregates from the raw events, from `since` on; returns rows written.

    Without `since`, from the first whole day kept: the day after the oldest raw event,
    whose earlier hours the retention purge may have taken. Days before are left alone:
    their raw rows are gone, the aggregates are all that is left of them.
    """
    if since is None:
        first = UsageEvent.objects.order_by("created_at").values_list("created_at", flat=True)
        if not first:
            return 0
        since = timezone.localdate(first[0]) + datetime.timedelta(days=1)
    events = UsageEvent.objects.filter(created_at__date__gte=since)
    UsageDaily.objects.filter(day__gte=since).delete()
    fields = ("domain_id", "created_at", "model", "token_id", "user_id", "status")
    fields += ("prompt_tokens", "completion_tokens", "total_tokens", "latency_ms")
    totals = aggregate_events(events.values(*fields).iterator(chunk_size=5000), known_model_names())
    UsageDaily.objects.bulk_create(
        [
            UsageDaily(
                domain_id=key[0],
                day=key[1],
                model=key[2],
                token_id=key[3],
                user_id=key[4],
                **values,
            )
            for key, values in totals.items()
        ],
        batch_size=1000,
    )
    return len(totals)


# Reads --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """An inclusive range of days (UTC)."""

    start: datetime.date
    end: datetime.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @classmethod
    def last(cls, days: int) -> "Period":
        today = timezone.localdate()
        return cls(today - datetime.timedelta(days=days - 1), today)


def percentile(histogram: list[int], fraction: float) -> float | None:
    """Estimate a latency percentile (ms) from bucket counts, interpolating in the bucket."""
    count = sum(histogram)
    if not count:
        return None
    rank = fraction * count
    seen = 0
    for index, bucket_count in enumerate(histogram):
        if bucket_count and seen + bucket_count >= rank:
            low = LATENCY_BUCKETS_MS[index - 1] if index else 0
            high = (
                LATENCY_BUCKETS_MS[index]
                if index < len(LATENCY_BUCKETS_MS)
                else LATENCY_BUCKETS_MS[-1] * 2
            )
            return round(low + (high - low) * (rank - seen) / bucket_count, 1)
        seen += bucket_count
    return float(LATENCY_BUCKETS_MS[-1])


def _measures(row: dict) -> dict:
    """A summed row's public measures: counts, average and percentile latencies."""
    histogram = [row.get(name) or 0 for name in LATENCY_FIELDS]
    requests = row.get("requests") or 0
    return {
        **{name: row.get(name) or 0 for name in COUNTS},
        "avg_latency_ms": round((row.get("latency_ms_sum") or 0) / requests, 1) if requests else 0,
        "p50_latency_ms": percentile(histogram, 0.50),
        "p95_latency_ms": percentile(histogram, 0.95),
    }


def _sums() -> dict:
    return {name: Sum(name) for name in SUMS}


def usage_daily(*, domain: Domain, user_id: int | None, period: Period) -> QuerySet[UsageDaily]:
    """The domain's aggregates over the period, limited to one member when given."""
    rows = UsageDaily.objects.filter(domain=domain, day__range=(period.start, period.end))
    return rows if user_id is None else rows.filter(user_id=user_id)


def _token_names(token_ids: Iterable[int]) -> dict[int, str]:
    from tokens.models import Token

    return dict(Token.objects.filter(pk__in=set(token_ids)).values_list("pk", "name"))


def _member_names(user_ids: Iterable[int]) -> dict[int, str]:
    return dict(User.objects.filter(pk__in=set(user_ids)).values_list("pk", "email"))


def _token_label(token_id: int, names: dict[int, str]) -> str:
    if not token_id:
        return "(no token)"
    return names.get(token_id, "(deleted token)")


def _add(into: dict, row: dict) -> None:
    for name in SUMS:
        into[name] = into.get(name, 0) + (row.get(name) or 0)


def usage_report(*, domain: Domain, user_id: int | None, period: Period) -> dict:
    """Everything the usage page and API show: totals, a series per day (every day of the
    period, zeros included), and breakdowns by model, by token and by member."""
    rows = usage_daily(domain=domain, user_id=user_id, period=period)
    report = _report(
        rows,
        period,
        by=("model", "token_id", "user_id") if user_id is None else ("model", "token_id"),
    )
    report["scope"] = "own" if user_id is not None else "domain"
    return report


def token_usage_report(*, token_id: int, period: Period) -> dict:
    """One token's usage in every domain it was used in (the profile page's per-token view):
    the usage page's totals and series, with breakdowns by domain and by model."""
    rows = UsageDaily.objects.filter(token_id=token_id, day__range=(period.start, period.end))
    report = _report(rows, period, by=("domain_id", "model"))
    report["scope"] = "token"
    return report


def _report(rows: QuerySet[UsageDaily], period: Period, *, by: tuple[str, ...]) -> dict:
    """Totals, the daily series and a breakdown per field of `by` over some aggregates.

    Two grouped reads of the aggregates (per day; per the fields of `by`), whatever the
    traffic; the totals and the breakdowns are summed from them in Python.
    """
    per_day = {row["day"]: row for row in rows.values("day").annotate(**_sums()).order_by()}
    groups = list(rows.values(*by).annotate(**_sums()).order_by())
    totals: dict = {}
    series = []
    for offset in range(period.days):
        day = period.start + datetime.timedelta(days=offset)
        row = per_day.get(day, {})
        _add(totals, row)
        series.append({"day": day.isoformat(), **_measures(row)})

    def breakdown(field: str) -> list[dict]:
        if field not in by:
            return []
        summed: dict = {}
        for group in groups:
            _add(summed.setdefault(group[field], {}), group)
        measured = [{field: key, **_measures(values)} for key, values in summed.items()]
        return sorted(measured, key=lambda row: (-row["requests"], str(row[field])))

    by_model = breakdown("model")
    for row in by_model:
        row["known"] = bool(row["model"])
        row["model"] = row["model"] or UNKNOWN_MODEL
    by_token = breakdown("token_id")
    names = _token_names(row["token_id"] for row in by_token)
    for row in by_token:
        row["token_name"] = _token_label(row["token_id"], names)
        row["token_id"] = row["token_id"] or None
    by_member = breakdown("user_id")
    emails = _member_names(row["user_id"] for row in by_member)
    for row in by_member:
        row["member"] = emails.get(row["user_id"], "(removed user)")
        row["user_id"] = row["user_id"] or None
    by_domain = breakdown("domain_id")
    domain_names = dict(
        Domain.objects.filter(pk__in=[row["domain_id"] for row in by_domain]).values_list(
            "pk", "name"
        )
    )
    for row in by_domain:
        row["domain_name"] = domain_names.get(row["domain_id"], "(deleted domain)")
        row["domain_id"] = str(row["domain_id"])
    report = {
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "days": period.days,
        "totals": _measures(totals),
        "series": series,
        "by_model": by_model,
        "by_token": by_token,
        "by_member": by_member,
    }
    if "domain_id" in by:
        report["by_domain"] = by_domain
    return report


def usage_export_rows(*, domain: Domain, user_id: int | None, period: Period) -> list[dict]:
    """One row per day, model, token and member: what the CSV export holds."""
    rows = list(
        usage_daily(domain=domain, user_id=user_id, period=period)
        .values("day", "model", "token_id", "user_id", *SUMS)
        .order_by("day", "model", "token_id", "user_id")
    )
    tokens = _token_names(row["token_id"] for row in rows)
    emails = _member_names(row["user_id"] for row in rows)
    return [
        {
            "day": row["day"].isoformat(),
            "model": row["model"] or UNKNOWN_MODEL,
            "token": _token_label(row["token_id"], tokens),
            "member": emails.get(row["user_id"], "") if row["user_id"] else "",
            **_measures(row),
        }
        for row in rows
    ]


EXPORT_COLUMNS = (
    "day",
    "model",
    "token",
    "member",
    *COUNTS,
    "avg_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
)


# A token's CSV export (`tokens.views.token_usage_export`): the rows of its report's daily
# series, one per day of the period.
TOKEN_EXPORT_COLUMNS = ("day", *COUNTS, "avg_latency_ms", "p50_latency_ms", "p95_latency_ms")


def usage_today_and_week(*, domain: Domain, user_id: int | None) -> dict:
    """Today's requests, tokens and errors beside the daily average of the seven days before."""
    today = timezone.localdate()
    week = Period(today - datetime.timedelta(days=7), today - datetime.timedelta(days=1))
    now = usage_daily(domain=domain, user_id=user_id, period=Period(today, today)).aggregate(
        **{name: Sum(name, default=0) for name in ("requests", "total_tokens", "errors")}
    )
    before = usage_daily(domain=domain, user_id=user_id, period=week).aggregate(
        **{name: Sum(name, default=0) for name in ("requests", "total_tokens", "errors")}
    )
    return {
        "today": now,
        "week": before,
        "week_daily_average": {name: round(value / 7, 1) for name, value in before.items()},
    }
