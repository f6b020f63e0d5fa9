"""The model registry as each process sees it, and the choice of backend for a request.

The request path never touches the ORM for routing: each process keeps a snapshot of
backends, models, deployments, per-domain access, allowed browser origins (CORS) and
compiled guardrail policies. Every `CUBEAI_ROUTING_REFRESH_SECONDS` a background task of
the process checks it, on the registry's own executor (`inference.offpath`), and no request
ever waits for that: one query reads the registry version (`RegistryVersion`, bumped by every write that routing
sees), and the snapshot is rebuilt only when it moved, when an attestation in it expired,
or after `CUBEAI_ROUTING_REBUILD_SECONDS` regardless. Guardrail policies are compiled once
per policy version. Health is the database's view (background health checks and
attestation) combined with this process's circuit breaker, which reacts at once.

Routing picks, among the routable deployments whose breaker lets a request through, the
backend with the fewest requests in flight from this process, ties taken in turn
(round-robin per model). A breaker opens after `CUBEAI_BREAKER_FAILURES` failures in a row;
after `CUBEAI_BREAKER_COOLDOWN_SECONDS` it is half-open and lets exactly one request through
(the probe): success closes it, failure opens it again for another cool-down.
"""

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from inference import offpath
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
    """A per-process circuit breaker: closed, open after repeated failures, half-open after
    a cool-down, when one probe request goes through; its answer closes or reopens it."""

    failures: int = 0
    # 0 when closed; else when the cool-down ends (then half-open).
    open_until: float = 0.0
    # While half-open: until when the probe sent is awaited (its first-byte timeout); no
    # other request goes through before. A probe abandoned without an answer frees the
    # way for the next one when this passes.
    probe_until: float = 0.0

    @property
    def state(self) -> str:
        if not self.open_until:
            return "closed"
        return "open" if self.open_until > time.monotonic() else "half-open"

    def allows(self, now: float) -> bool:
        """Closed, or half-open with no probe out."""
        return self.open_until <= now and self.probe_until <= now

    def take(self, now: float) -> bool:
        """Claim the right to send one request now: always when closed, once when
        half-open (the probe), never when open."""
        if not self.open_until:
            return True
        if not self.allows(now):
            return False
        self.probe_until = now + settings.CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT
        return True

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.open_until or self.failures >= settings.CUBEAI_BREAKER_FAILURES:
            # Tripped, or a half-open probe failed: open for another cool-down.
            self.open_until = now + settings.CUBEAI_BREAKER_COOLDOWN_SECONDS
            self.probe_until = 0.0

    def success(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.probe_until = 0.0


class Snapshot:
    """The registry as of one load."""

    def __init__(
        self,
        backends: dict[int, Target],
        models: dict[str, ModelEntry],
        access,
        guardrails,
        cors: dict[str, frozenset[str]] | None = None,
        *,
        version: int | None = None,
        expires: float = float("inf"),
    ):
        self.backends = backends
        # domain id -> the browser origins its admins allow to call the API (CORS)
        self.cors = cors or {}
        self.models = models
        # domain id (or "" for the platform default) -> compiled guardrail pipeline
        self.guardrails = guardrails
        # domain id -> model id -> allowed: each domain's explicit model access rules
        self.access: dict[str, dict[int, bool]] = access
        self.loaded_at = self.checked_at = time.monotonic()
        # The registry version it was built from (None: unknown, rebuilt at every check).
        self.version = version
        # When (monotonic) the first attestation in it expires: rebuilt then.
        self.expires = expires

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


def registry_version() -> int | None:
    """The registry version now (one query), None if its row is missing."""
    from inference.models import RegistryVersion

    return RegistryVersion.objects.filter(pk=1).values_list("version", flat=True).first()


def load_snapshot() -> Snapshot:
    """Read the registry (synchronously; run off the event loop)."""
    from inference.models import Backend, Deployment, Model

    version = registry_version()
    now = timezone.now()
    expires = float("inf")
    backends = {}
    for backend in Backend.objects.filter(enabled=True):
        attested, attestation = _backend_routable(backend, now)
        if attested and backend.attestation_expires_at is not None:
            left = (backend.attestation_expires_at - now).total_seconds()
            expires = min(expires, time.monotonic() + left)
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
    return Snapshot(
        backends,
        models,
        rules_by_domain(),
        load_guardrails(),
        load_cors(),
        version=version,
        expires=expires,
    )


def load_cors() -> dict[str, frozenset[str]]:
    """The browser origins each live domain allows (only domains that allow any)."""
    from domains.models import Domain

    rows = Domain.objects.filter(deleted_at=None)
    return {
        str(pk): frozenset(origins)
        for pk, origins in rows.values_list("pk", "cors_origins")
        if origins
    }


# Compiled guardrail pipelines by policy row: a row is one version of a policy and never
# edited, so each is compiled once per process ("default" is the built-in policy).
_compiled: dict[int | str, object] = {}


def load_guardrails() -> dict:
    """Every active guardrail policy, compiled once per version; "" holds the platform
    default."""
    from guardrails import DEFAULT_POLICY, compile_policy
    from guardrails.models import GuardrailPolicy

    if "default" not in _compiled:
        _compiled["default"] = compile_policy(DEFAULT_POLICY)
    pipelines = {"": _compiled["default"]}
    active = {"default"}
    for row in GuardrailPolicy.objects.filter(active=True).only("pk", "domain_id", "document"):
        compiled = _compiled.get(row.pk)
        if compiled is None:
            compiled = _compiled[row.pk] = compile_policy(row.policy)
        pipelines["" if row.domain_id is None else str(row.domain_id)] = compiled
        active.add(row.pk)
    for stale in [key for key in _compiled if key not in active]:
        del _compiled[stale]
    return pipelines


def check_snapshot(current: Snapshot | None) -> Snapshot | None:
    """A new snapshot if the registry changed since `current` was built (or it is due for
    a rebuild anyway), else None. Synchronous: runs on the registry's executor."""
    if current is not None and current.version is not None:
        now = time.monotonic()
        due = (
            now >= current.expires
            or now - current.loaded_at >= settings.CUBEAI_ROUTING_REBUILD_SECONDS
        )
        if not due and registry_version() == current.version:
            return None
    return load_snapshot()


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
        self._watcher: asyncio.Task | None = None
        # model id -> the next turn of its round-robin among equally busy backends
        self._turns: Counter[int] = Counter()

    async def current(self) -> Snapshot:
        snapshot = self.snapshot
        if snapshot is None or settings.CUBEAI_ROUTING_REFRESH_SECONDS <= 0:
            # No snapshot yet, or freshness asked for on every request (tests, debugging).
            return await self.refresh()
        if settings.CUBEAI_OFFPATH_EXECUTORS:
            # A serving process: one task checks every period, requests or not, so a change
            # is seen within the period even after a quiet spell.
            loop = asyncio.get_running_loop()
            if (
                self._watcher is None
                or self._watcher.done()
                or self._watcher.get_loop() is not loop
            ):
                self._watcher = loop.create_task(self._watch())
        elif time.monotonic() - snapshot.checked_at > settings.CUBEAI_ROUTING_REFRESH_SECONDS and (
            self._refreshing is None or self._refreshing.done()
        ):
            # In-process tests (one event loop per test): the request that finds the snapshot
            # due starts the check beside itself, never waiting for it.
            snapshot.checked_at = time.monotonic()
            self._refreshing = asyncio.get_running_loop().create_task(self._check())
        return snapshot

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(settings.CUBEAI_ROUTING_REFRESH_SECONDS)
            await self._check()

    async def _check(self) -> None:
        try:
            snapshot = await offpath.run("registry", check_snapshot, self.snapshot)
        except Exception:
            # The database may be away for a while: keep routing on the snapshot we have.
            log.warning("could not check the registry; routing on the last snapshot")
            return
        if snapshot is not None:
            self.snapshot = snapshot

    async def refresh(self) -> Snapshot:
        """Load a new snapshot now and wait for it."""
        snapshot = await offpath.run("registry", load_snapshot)
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
            turn = self._turns[entry.id] % len(found)
            self._turns[entry.id] = turn + 1
            found = found[turn:] + found[:turn]
            found.sort(key=lambda pair: self.in_flight[pair[0].id])
        return found

    def started(self, backend_id: int) -> bool:
        """Count one more request in flight to this backend, if its breaker lets it through
        now (False: a half-open breaker's probe is already out, or it opened meanwhile)."""
        if not self.breaker(backend_id).take(time.monotonic()):
            return False
        self.in_flight[backend_id] += 1
        return True

    def finished(self, backend_id: int) -> None:
        """One request to this backend is over (answered, failed or abandoned)."""
        if self.in_flight[backend_id] > 0:
            self.in_flight[backend_id] -= 1


registry = Registry()
