"""The model registry as each process sees it, and the choice of backend for a request.

The request path never touches the ORM for routing: each process keeps a snapshot of
backends, models, deployments, per-domain access and allowed browser origins, refreshed in the background every
`CUBEAI_ROUTING_REFRESH_SECONDS`. Health is the database's view (background health checks
and attestation) combined with this process's circuit breaker, which reacts at once.
"""

import asyncio
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from inference.access import may_use, rules_by_domain
from inference.credentials import backend_credential

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Target:
    """A backend as the forwarder needs it."""

    id: int
    name: str
    base_url: str
    kind: str
    api_key: str
    tee_type: str
    attestation: str
    pinned_key_sha256: str
    routable: bool


@dataclass(slots=True)
class ModelEntry:
    """A model with the deployments that serve it."""

    id: int
    name: str
    tasks: frozenset[str]
    public: bool
    created: int
    owned_by: str
    context_length: int
    capabilities: frozenset[str] = frozenset()
    deployments: list[tuple[int, str]] = field(default_factory=list)


@dataclass(slots=True)
class Breaker:
    """A per-process circuit breaker: open after repeated failures, probe after a cool-down."""

    failures: int = 0
    open_until: float = 0.0

    def allows(self, now: float) -> bool:
        return self.open_until <= now

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= settings.CUBEAI_BREAKER_FAILURES:
            self.open_until = now + settings.CUBEAI_BREAKER_COOLDOWN_SECONDS

    def success(self) -> None:
        self.failures = 0
        self.open_until = 0.0


class Snapshot:
    """The registry as of one load."""

    def __init__(
        self,
        backends: dict[int, Target],
        models: dict[str, ModelEntry],
        access,
        guardrails,
        cors: dict[str, frozenset[str]] | None = None,
    ):
        self.backends = backends
        # domain id -> the browser origins its admins allow to call the API (CORS)
        self.cors = cors or {}
        self.models = models
        # domain id (or "" for the platform default) -> compiled guardrail pipeline
        self.guardrails = guardrails
        # domain id -> model id -> allowed: each domain's explicit model access rules
        self.access: dict[str, dict[int, bool]] = access
        self.loaded_at = time.monotonic()

    def allowed(self, domain_id: str, entry: ModelEntry) -> bool:
        rule = self.access.get(domain_id, {}).get(entry.id)
        return may_use(public=entry.public, rule=rule)

    def models_for(self, domain_id: str) -> list[ModelEntry]:
        return [m for m in self.models.values() if self.allowed(domain_id, m)]

    def model_for(self, domain_id: str, name: str) -> ModelEntry | None:
        entry = self.models.get(name)
        return entry if entry is not None and self.allowed(domain_id, entry) else None


def _backend_routable(backend, now) -> tuple[bool, str]:
    if backend.tee_type == "none":
        # Never confidential; routed only when an operator said so, and not after its last
        # challenge failed (say, the agent behind the URL changed).
        allowed = backend.allow_not_confidential and backend.attestation_status != "failed"
        return allowed, "not-confidential"
    verified = backend.attestation_status == "verified" and (
        backend.attestation_expires_at is None or backend.attestation_expires_at > now
    )
    return verified, backend.attestation_status if verified else "unverified"


def load_snapshot() -> Snapshot:
    """Read the registry (synchronously; run off the event loop)."""
    from inference.models import Backend, Deployment, Model

    now = timezone.now()
    backends = {}
    for backend in Backend.objects.filter(enabled=True):
        attested, attestation = _backend_routable(backend, now)
        backends[backend.pk] = Target(
            id=backend.pk,
            name=backend.name,
            base_url=backend.base_url.rstrip("/"),
            kind=backend.kind,
            api_key=backend_credential(backend),
            tee_type=backend.tee_type,
            attestation=attestation,
            pinned_key_sha256=backend.pinned_key_sha256,
            routable=attested and backend.healthy,
        )
    models = {
        model.name: ModelEntry(
            id=model.pk,
            name=model.name,
            tasks=frozenset(model.tasks),
            public=model.public,
            created=int(model.created_at.timestamp()),
            owned_by=model.owned_by,
            context_length=model.context_length,
            capabilities=frozenset(model.capabilities),
        )
        for model in Model.objects.all()
    }
    by_id = {entry.id: entry for entry in models.values()}
    for deployment in Deployment.objects.filter(enabled=True, backend__enabled=True):
        entry = by_id.get(deployment.model_id)
        if entry is not None:
            entry.deployments.append((deployment.backend_id, deployment.upstream_model))
    return Snapshot(backends, models, rules_by_domain(), load_guardrails(), load_cors())


def load_cors() -> dict[str, frozenset[str]]:
    """The browser origins each live domain allows (only domains that allow any)."""
    from domains.models import Domain

    rows = Domain.objects.filter(deleted_at=None)
    return {
        str(pk): frozenset(origins)
        for pk, origins in rows.values_list("pk", "cors_origins")
        if origins
    }


def load_guardrails() -> dict:
    """Compile every active guardrail policy once; "" holds the platform default."""
    from guardrails import DEFAULT_POLICY, compile_policy
    from guardrails.models import GuardrailPolicy

    pipelines = {"": compile_policy(DEFAULT_POLICY)}
    for row in GuardrailPolicy.objects.filter(active=True):
        pipelines["" if row.domain_id is None else str(row.domain_id)] = compile_policy(row.policy)
    return pipelines


class Registry:
    """This process's view of the registry: the snapshot, breakers and in-flight counts.

    Breakers and in-flight counts are kept by backend id, outside the snapshot, so a
    refresh (a new snapshot with new backend objects) leaves them as they are: a request
    that spans a refresh is counted done against the count it was counted in.
    """

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.breakers: dict[int, Breaker] = {}
        self.in_flight: Counter[int] = Counter()
        self._refreshing: asyncio.Task | None = None
        self._rotation = itertools.count()

    async def current(self) -> Snapshot:
        snapshot = self.snapshot
        if snapshot is None or settings.CUBEAI_ROUTING_REFRESH_SECONDS <= 0:
            # No snapshot yet, or freshness asked for on every request (tests, debugging).
            return await self.refresh()
        if time.monotonic() - snapshot.loaded_at > settings.CUBEAI_ROUTING_REFRESH_SECONDS and (
            self._refreshing is None or self._refreshing.done()
        ):
            # Serve the current snapshot and reload beside the request.
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
        return snapshot

    async def refresh(self) -> Snapshot:
        snapshot = await sync_to_async(load_snapshot, thread_sensitive=True)()
        self.snapshot = snapshot
        return snapshot

    def guardrails_for(self, domain_id: str):
        """The domain's compiled guardrail pipeline; needs a loaded snapshot (routing has one)."""
        guardrails = self.snapshot.guardrails
        return guardrails.get(domain_id) or guardrails[""]

    def breaker(self, backend_id: int) -> Breaker:
        breaker = self.breakers.get(backend_id)
        if breaker is None:
            breaker = self.breakers[backend_id] = Breaker()
        return breaker

    def candidates(self, snapshot: Snapshot, entry: ModelEntry) -> list[tuple[Target, str]]:
        """Routable deployments, least in-flight first, ties rotated round-robin."""
        now = time.monotonic()
        found = [
            (snapshot.backends[backend_id], upstream_model)
            for backend_id, upstream_model in entry.deployments
            if backend_id in snapshot.backends
            and snapshot.backends[backend_id].routable
            and self.breaker(backend_id).allows(now)
        ]
        if len(found) > 1:
            turn = next(self._rotation) % len(found)
            found = found[turn:] + found[:turn]
            found.sort(key=lambda pair: self.in_flight[pair[0].id])
        return found

    def started(self, backend_id: int) -> None:
        """One more request in flight to this backend."""
        self.in_flight[backend_id] += 1

    def finished(self, backend_id: int) -> None:
        """One request to this backend is over (answered, failed or abandoned)."""
        if self.in_flight[backend_id] > 0:
            self.in_flight[backend_id] -= 1


registry = Registry()
