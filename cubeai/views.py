"""Liveness and readiness probes, without authentication."""

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """The stores this process needs are reachable; 503 otherwise."""
    checks = {"database": _check_database}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis
    results = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:
            log.warning("readiness check %s failed: %s", name, type(exc).__name__)
            results[name] = "unavailable"
        else:
            results[name] = "ok"
    ready = all(value == "ok" for value in results.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": results},
        status=200 if ready else 503,
    )


# CSRF-exempt as DRF's views are: a client with a token has no CSRF cookie, and a 404 that
# changes nothing has nothing to protect (without it, a write got Django's HTML 403).
@csrf_exempt
def api_not_found(request: HttpRequest, rest: str) -> JsonResponse:
    """An unknown management API route, in its envelope (`domains.drf.exception_handler`)."""
    return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
