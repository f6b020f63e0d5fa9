"""The background health check of backends, run by Celery beat off the request path.

Each enabled backend must answer (below 500) within the timeout: an agent its open
`GET /health`, any other backend `GET <base_url>/models`. The result
is written to the Backend row (a change of state bumps the registry version); every web
process's routing snapshot picks it up within `CUBEAI_ROUTING_REFRESH_SECONDS`, taking a dead backend out of routing and putting it back
once it answers again. (Each process's circuit breaker reacts faster, to its own failures.)
"""

import logging
from concurrent.futures import ThreadPoolExecutor

import httpx
from django.conf import settings
from django.utils import timezone

from inference.models import Backend, registry_changed

log = logging.getLogger(__name__)


def probe_url(backend: Backend) -> str:
    """An agent's bare health probe needs no credential (its /v1 refuses and logs a call
    without one); other servers are asked for their model list."""
    base = backend.base_url.rstrip("/")
    if backend.kind == Backend.Kind.AGENT:
        return f"{base.removesuffix('/v1')}/health"
    return f"{base}/models"


def _probe(backend: Backend) -> str:
    """'' when the backend answers HTTP below 500, else a short reason (never a body).

    No credentials are sent, so certificate checks can be skipped safely: this is liveness
    only, and real traffic is pinned to the attested key. A 401 still proves it is up.
    """
    try:
        response = httpx.get(
            probe_url(backend),
            timeout=settings.CUBEAI_HEALTH_TIMEOUT_SECONDS,
            verify=False,  # noqa: S501 -- see the docstring: nothing secret is sent.
        )
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return "" if response.status_code < 500 else f"HTTP {response.status_code}"


def backends_check_health() -> dict[str, bool]:
    """Probe every enabled backend concurrently and record the results."""
    backends = list(Backend.objects.filter(enabled=True))
    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(_probe, backends))
    now = timezone.now()
    results = {}
    for backend, reason in zip(backends, reasons, strict=True):
        healthy = not reason
        if healthy != backend.healthy:
            log.warning(
                "backend %s is now %s %s", backend.name, "up" if healthy else "down", reason
            )
        Backend.objects.filter(pk=backend.pk).update(
            healthy=healthy, health_checked_at=now, health_error=reason[:200]
        )
        if healthy != backend.healthy:
            registry_changed()
        results[backend.name] = healthy
    return results
