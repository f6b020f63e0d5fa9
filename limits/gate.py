"""The pipeline's side of limits: admit a call, or refuse it; settle it when it ends.

`admit` resolves the limits of the caller's domain and token (cached in process memory for
`CUBEAI_LIMITS_CACHE_SECONDS`, read without any write), checks every one of them in one
atomic step of the store (`limits.engine`), and returns a `Ticket` with OpenAI's
`x-ratelimit-*` headers. `settle` charges the real token count against the reservation,
frees the stream's slot, and queues the 80 % budget warning (an audit event written off
the request path, with the usage rows).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from django.conf import settings

from inference import offpath
from inference.errors import InferenceError, RateLimited
from limits import engine
from limits.engine import Plan, Quota, Rate, Settlement, Streams, Unavailable

__all__ = ["Quota", "Streams", "Ticket", "admit", "settle", "settle_later"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Effective:
    """The limits in force for one token in one domain (0: none, for budgets)."""

    domain_rpm: int
    domain_tpm: int
    domain_budget: int
    token_rpm: int
    token_tpm: int
    token_streams: int
    token_budget: int
    failure_mode: str


class QuotaExceeded(InferenceError):
    """A monthly token budget is spent (OpenAI's `insufficient_quota`)."""

    status = 429
    code = "insufficient_quota"

    def __init__(self, message: str, *, headers: dict[str, str]) -> None:
        super().__init__(message, type="insufficient_quota", headers=headers)


class LimitsUnavailable(InferenceError):
    """Redis is unreachable and the domain fails closed."""

    status = 503
    code = "limits_unavailable"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "Rate limiting is unavailable right now; please retry.",
            type="server_error",
            headers={"Retry-After": str(retry_after)},
        )


@dataclass(slots=True)
class Ticket:
    """An admitted call: what to settle when it ends, and its headers."""

    plan: Plan
    store: object
    headers: dict[str, str]
    reserved: int
    settled: bool = False


def resolve(domain_id: str, token_id: int | None) -> Effective:
    """The limits in force (synchronous: database reads, never writes): the domain's and
    the token's values, else the platform's defaults, within the platform's maxima."""
    from limits.models import DomainLimits, FailureMode, TokenLimits
    from limits.platform import platform_limits

    domain = DomainLimits.objects.filter(domain_id=domain_id).first()
    token = TokenLimits.objects.filter(domain_id=domain_id, token_id=token_id).first()

    def pick(*values, default: int, maximum: int) -> int:
        for value in values:
            if value is not None:
                return min(value, maximum)
        return min(default, maximum)

    p = platform_limits()
    return Effective(
        domain_rpm=pick(
            domain and domain.requests_per_minute,
            default=p.domain_requests_per_minute,
            maximum=p.max_requests_per_minute,
        ),
        domain_tpm=pick(
            domain and domain.tokens_per_minute,
            default=p.domain_tokens_per_minute,
            maximum=p.max_tokens_per_minute,
        ),
        domain_budget=min(
            (domain and domain.monthly_token_budget) or 0, p.max_monthly_token_budget
        ),
        token_rpm=pick(
            token and token.requests_per_minute,
            domain and domain.token_requests_per_minute,
            default=p.token_requests_per_minute,
            maximum=p.max_requests_per_minute,
        ),
        token_tpm=pick(
            token and token.tokens_per_minute,
            domain and domain.token_tokens_per_minute,
            default=p.token_tokens_per_minute,
            maximum=p.max_tokens_per_minute,
        ),
        token_streams=pick(
            token and token.concurrent_streams,
            domain and domain.token_concurrent_streams,
            default=p.token_concurrent_streams,
            maximum=p.max_concurrent_streams,
        ),
        token_budget=min(
            (token and token.monthly_token_budget)
            or (domain and domain.token_monthly_token_budget)
            or 0,
            p.max_monthly_token_budget,
        ),
        failure_mode=domain.failure_mode if domain else FailureMode.OPEN,
    )


_cache: dict[tuple[str, int], tuple[float, Effective]] = {}


async def effective(domain_id: str, token_id: int | None) -> Effective:
    """`resolve`, cached in this process for CUBEAI_LIMITS_CACHE_SECONDS."""
    key = (domain_id, token_id)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    found = await offpath.run("auth", resolve, domain_id, token_id)
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key] = (now + settings.CUBEAI_LIMITS_CACHE_SECONDS, found)
    return found


def month() -> str:
    return time.strftime("%Y%m", time.gmtime())


def budget_keys(domain_id: str, token_id: int | str | None = None) -> tuple[str, str]:
    """The counter of a budget this month, and its 80 % warning flag."""
    base = f"cube:q:{domain_id}" if token_id is None else f"cube:q:{domain_id}:{token_id}"
    return f"{base}:{month()}", f"{base}:{month()}:warned"


# The stores: Redis when configured (with process memory while it is unreachable and the
# domain fails open), else the machine's SQLite file.
_stores: dict[str, object] = {}


def _store(kind: str):
    store = _stores.get(kind)
    if store is None:
        if kind == "redis":
            store = engine.RedisStore(settings.REDIS_URL)
        elif kind == "sqlite":
            store = engine.SQLiteStore(settings.CUBEAI_LIMITS_SQLITE_PATH)
        else:
            store = engine.MemoryStore()
        _stores[kind] = store
    return store


def primary_store():
    return _store("redis" if settings.REDIS_URL else "sqlite")


# Budget charges that could not reach Redis, replayed when it answers again.
_pending: list[Settlement] = []


def plan_for(
    limits: Effective, domain_id: str, token_id: int | str, cost: int, stream: bool
) -> Plan:
    """`token_id`: the token, or `u<user id>` for a browser session."""
    token = f"cube:rl:{domain_id}:{token_id}"
    domain = f"cube:rl:{domain_id}"
    rates = [
        Rate(f"{token}:req", limits.token_rpm, 1, "requests", "token"),
        Rate(f"{domain}:req", limits.domain_rpm, 1, "requests", "domain"),
        Rate(f"{token}:tok", limits.token_tpm, min(cost, limits.token_tpm), "tokens", "token"),
        Rate(f"{domain}:tok", limits.domain_tpm, min(cost, limits.domain_tpm), "tokens", "domain"),
    ]
    quotas = [
        Quota(budget_keys(domain_id)[0], limits.domain_budget, cost, "domain", ""),
        Quota(budget_keys(domain_id, token_id)[0], limits.token_budget, cost, "token", ""),
    ]
    quotas[0].warned_key = budget_keys(domain_id)[1]
    quotas[1].warned_key = budget_keys(domain_id, token_id)[1]
    quotas[1].holder = str(token_id)
    streams = None
    if stream:
        member = uuid.uuid4().hex
        streams = Streams(f"{token}:streams", limits.token_streams, member)
    return Plan(rates, quotas, streams)


def _format_reset(seconds: float) -> str:
    """OpenAI's style: `1s`, `6m0s`, `120ms`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = round(seconds, 1)
    if whole < 60:
        return f"{whole:g}s"
    minutes, rest = divmod(int(whole), 60)
    return f"{minutes}m{rest}s"


def headers_for(plan: Plan, verdict: engine.Verdict) -> dict[str, str]:
    """The `x-ratelimit-*` headers: per kind, the scope (token or domain) with the least
    left, so a lowered domain limit shows as soon as it binds."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        best = None
        for rate, tat in zip(plan.rates, verdict.tats, strict=True):
            if rate.kind != kind:
                continue
            left = engine.remaining(rate, tat, verdict.now_ms)
            entry = (left, rate.limit, engine.reset_seconds(tat, verdict.now_ms))
            if best is None or entry[:2] < best[:2]:
                best = entry
        if best is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(best[1])
            headers[f"x-ratelimit-remaining-{kind}"] = str(best[0])
            headers[f"x-ratelimit-reset-{kind}"] = _format_reset(best[2])
    return headers


async def _run(store, method: str, argument, failure_mode: str):
    """Run a store step; while Redis is unreachable follow the domain's failure mode."""
    try:
        result = await getattr(store, method)(argument)
    except Unavailable:
        if failure_mode == "closed":
            raise LimitsUnavailable(settings.CUBEAI_LIMITS_UNAVAILABLE_RETRY_SECONDS) from None
        log.warning("limits: Redis is unreachable; failing open on local limits")
        memory = _store("memory")
        return memory, await getattr(memory, method)(argument)
    if _pending and store is not _stores.get("memory"):
        await _replay(store)
    return store, result


async def _replay(store) -> None:
    # Taken off the list before the await: concurrent requests replay the rest, never the
    # same charge twice.
    while _pending:
        settlement = _pending.pop(0)
        try:
            await store.settle(settlement)
        except Unavailable:
            _pending.insert(0, settlement)
            return


async def admit(
    *,
    domain_id: str,
    token_id: int | None,
    cost: int,
    stream: bool,
    user_id: int | None = None,
    on_reject=None,
) -> Ticket:
    """Check and charge every limit of this call at once; raise 429 (or 503) if refused.

    A signed-in browser session (no token) is counted under its user, with the domain's
    per-token limits and budget."""
    limits = await effective(domain_id, token_id)
    who = token_id if token_id is not None else f"u{user_id}"
    plan = plan_for(limits, domain_id, who, cost, stream)
    store, verdict = await _run(primary_store(), "acquire", plan, limits.failure_mode)
    headers = headers_for(plan, verdict)
    refused = verdict.refused
    if refused is None:
        return Ticket(plan, store, headers, cost)
    raise _refusal(refused, verdict, headers, on_reject)


async def admit_lookup(
    *, domain_id: str, token_id: int | None, user_id: int | None = None, on_reject=None
) -> dict[str, str]:
    """A call that reaches no model (the model list): one request against the request
    limits, no tokens and no budget (a spent budget still lists the models), so nothing to
    settle. Returns the answer's `x-ratelimit-*` headers; raises 429 (or 503) if refused."""
    limits = await effective(domain_id, token_id)
    who = token_id if token_id is not None else f"u{user_id}"
    plan = plan_for(limits, domain_id, who, 0, False)
    plan.quotas = []
    _, verdict = await _run(primary_store(), "acquire", plan, limits.failure_mode)
    headers = headers_for(plan, verdict)
    if verdict.refused is not None:
        raise _refusal(verdict.refused, verdict, headers, on_reject)
    return headers


def _refusal(refused, verdict: engine.Verdict, headers: dict[str, str], on_reject=None):
    """The 429 for the limit a store refused, with `Retry-After`."""
    retry = max(1, int(verdict.retry_after_ms / 1000 + 0.999))
    headers = {**headers, "Retry-After": str(retry)}
    if on_reject is not None:
        on_reject(refused)
    if isinstance(refused, Quota):
        return QuotaExceeded(
            f"This {refused.scope}'s monthly token budget ({refused.budget} tokens) is spent; "
            "it renews at the start of next month (UTC).",
            headers=headers,
        )
    if isinstance(refused, Streams):
        return RateLimited(
            f"Concurrent streams limit reached for this token: {refused.limit} streams at "
            "once. Retry when one ends.",
            headers=headers,
            extra={"limit": "concurrent_streams"},
        )
    what = refused.kind.replace("_", " ")
    return RateLimited(
        f"Rate limit reached for this {refused.scope}: {refused.limit} {what} per "
        f"minute. Retry after {retry} s.",
        headers=headers,
        extra={"limit": f"{refused.kind}_per_minute", "scope": refused.scope},
    )


async def admit_challenge(*, domain_id: str, token_id: int) -> None:
    """Clients' attestation challenges, per token and per domain, counted apart from
    inference: each one costs every backend a fresh report, not tokens."""
    kind = "attestation_challenges"
    plan = Plan(
        [
            Rate(
                f"cube:rl:att:{domain_id}:{token_id}",
                settings.CUBEAI_ATTESTATION_CLIENT_TOKEN_RPM,
                1,
                kind,
                "token",
            ),
            Rate(
                f"cube:rl:att:{domain_id}",
                settings.CUBEAI_ATTESTATION_CLIENT_DOMAIN_RPM,
                1,
                kind,
                "domain",
            ),
        ],
        [],
    )
    limits = await effective(domain_id, token_id)
    _, verdict = await _run(primary_store(), "acquire", plan, limits.failure_mode)
    if verdict.refused is not None:
        raise _refusal(verdict.refused, verdict, {})


async def settle(ticket: Ticket, *, total_tokens: int, domain_id: str) -> None:
    """Charge the real count (against the reservation) and free the stream's slot."""
    if ticket.settled:
        return
    ticket.settled = True
    # Each limit is charged the real count less what it was charged up front (a rate's
    # reservation is capped at its limit).
    settlement = Settlement(
        rates=[
            (rate, total_tokens - rate.cost)
            for rate in ticket.plan.rates
            if rate.kind == "tokens" and total_tokens != rate.cost
        ],
        quotas=[(quota, total_tokens - quota.cost) for quota in ticket.plan.quotas],
        streams=ticket.plan.streams,
    )
    memory = _stores.get("memory")
    if ticket.store is memory and settings.REDIS_URL:
        # Admitted while Redis was unreachable: the shared budgets never saw the
        # reservation, so they are charged the whole count once Redis answers again.
        await memory.settle(settlement)
        _pending.append(Settlement([], [(quota, total_tokens) for quota in ticket.plan.quotas]))
        return
    try:
        warned = await ticket.store.settle(settlement)
    except Unavailable:
        # The budgets must not lose this usage: charge it when Redis answers again.
        _pending.append(Settlement(rates=[], quotas=settlement.quotas))
        await _store("memory").settle(settlement)
        return
    except Exception:
        log.exception("limits: could not settle a call")
        return
    for quota, used in zip(ticket.plan.quotas, warned, strict=True):
        if used:
            from inference import metering

            target, holder = await _warning_holder(quota)
            metering.audit(
                domain_id=domain_id,
                action="quota.warning",
                target=target,
                details={
                    "scope": quota.scope,
                    **holder,
                    "budget": quota.budget,
                    "used": used,
                    "month": month(),
                },
            )


def _token_name(token_id: int) -> str:
    from tokens.models import Token

    return Token.objects.filter(pk=token_id).values_list("name", flat=True).first() or ""


async def _warning_holder(quota: Quota) -> tuple[str, dict]:
    """The audit target and details naming whose budget crossed 80 %: the domain, a token
    (id and name: one read, at most once a month per token) or a browser session's user."""
    if quota.scope != "token" or not quota.holder:
        return quota.scope, {}
    if quota.holder.startswith("u"):
        return f"user {quota.holder[1:]}", {"user_id": int(quota.holder[1:])}
    token_id = int(quota.holder)
    name = await offpath.run("auth", _token_name, token_id)
    return f"token {token_id}", {"token_id": token_id, "token_name": name}


_settling: set[asyncio.Task] = set()


def settle_later(ticket: Ticket, *, total_tokens: int, domain_id: str) -> None:
    """`settle` off the caller's path, on the running loop (held so it is not collected)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(settle(ticket, total_tokens=total_tokens, domain_id=domain_id))
    _settling.add(task)
    task.add_done_callback(_settling.discard)


async def budget_used(domain_id: str, token_id: int | None = None) -> int | None:
    """Tokens charged against a budget this month (None if the store is unreachable)."""
    key = budget_keys(domain_id, token_id)[0]
    store = primary_store()
    plan = Plan(rates=[], quotas=[Quota(key, 0, 0, "domain", "")])
    try:
        verdict = await store.acquire(plan)
    except Unavailable:
        return None
    return verdict.used[0]
