"""Prometheus metrics of the web processes and the Celery worker, and `/metrics`.

With `PROMETHEUS_MULTIPROC_DIR` set (runplatform sets it, and empties it at start), every
process writes its samples to files there and `/metrics` adds them up: all uvicorn
workers, and the Celery worker too when it shares the folder. Without it, `/metrics` shows
the answering process only. Labels are bounded: endpoints and statuses are the API's own,
models are the registered ones ("unknown" for any other name a client sends), backends
are the registered ones.

`/metrics` needs `Authorization: Bearer <CUBEAI_METRICS_TOKEN>`, or a client address in
`CUBEAI_METRICS_ALLOWED_NETWORKS`; with neither set it answers 404. A Celery worker serves
its own on `CUBEAI_METRICS_WORKER_PORT` (off by default) behind the same credential.
"""

import asyncio
import hmac
import ipaddress
import os
import time

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("cubeai_requests", "API requests answered", ["endpoint", "model", "status"])
REQUEST_SECONDS = Histogram(
    "cubeai_request_duration_seconds",
    "API request latency, to the last byte",
    ["endpoint", "model", "status"],
    buckets=LATENCY_BUCKETS,
)
STREAMS_IN_FLIGHT = Gauge(
    "cubeai_streams_in_flight", "Streams being relayed", multiprocess_mode="livesum"
)
UPSTREAM_SECONDS = Histogram(
    "cubeai_upstream_duration_seconds",
    "Backend latency to the response headers",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
GUARDRAILS_SECONDS = Histogram(
    "cubeai_guardrails_duration_seconds",
    "Time spent in input guardrails",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
LIMIT_REJECTIONS = Counter(
    "cubeai_limit_rejections",
    "Requests refused by a rate limit or a budget",
    ["limit", "scope"],
)
BREAKER_OPEN = Gauge(
    "cubeai_breaker_open",
    "1 while a backend's circuit breaker is open in some process",
    ["backend"],
    multiprocess_mode="max",
)
EVENT_LOOP_TASKS = Gauge(
    "cubeai_event_loop_tasks",
    "Tasks alive on the process's event loop, counted when it answered its last scrape",
    multiprocess_mode="liveall",
)
JOBS = Counter("cubeai_jobs", "Celery jobs by final state", ["task", "state"])
JOB_SECONDS = Histogram(
    "cubeai_job_duration_seconds",
    "Celery job run time",
    ["task"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)


def model_label(model: str, known: bool) -> str:
    """A model name fit for a label: a registered model's name, else "unknown" (a call
    refused before its model was found records none)."""
    return model if known and model else "unknown"


def observe_call(*, endpoint: str, model: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, model, str(status)).inc()
    REQUEST_SECONDS.labels(endpoint, model, str(status)).observe(seconds)


def _allowed(authorization: str, address: str) -> bool:
    """The metrics credential: the bearer token, or a client in an allowed network."""
    token = settings.CUBEAI_METRICS_TOKEN
    given = authorization[7:].strip() if authorization.startswith("Bearer ") else ""
    if token and given and hmac.compare_digest(given.encode(), token.encode()):
        return True
    try:
        client = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(
        client in ipaddress.ip_network(network, strict=False)
        for network in settings.CUBEAI_METRICS_ALLOWED_NETWORKS
    )


def _enabled() -> bool:
    return bool(settings.CUBEAI_METRICS_TOKEN or settings.CUBEAI_METRICS_ALLOWED_NETWORKS)


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """`GET /metrics`: Prometheus' text format, every process of the folder added up.

    Async so that it runs on the event loop that serves requests, and counts that loop's
    tasks (a task leaked by a request path shows as a count that keeps growing). With
    several workers, each reports the count of its last scrape (one series per process)."""
    if not _enabled():
        raise Http404()
    if not _allowed(request.headers.get("Authorization", ""), request.META.get("REMOTE_ADDR")):
        response = HttpResponse("Forbidden\n", status=403, content_type="text/plain")
        response["WWW-Authenticate"] = "Bearer"
        return response
    # The scrape's own tasks (the server's for its connection, Django's) are in the count:
    # the same few at every scrape.
    EVENT_LOOP_TASKS.set(len(asyncio.all_tasks()))
    # Off the loop: with a metrics folder this reads every process's files.
    body = await asyncio.to_thread(generate_latest, _registry())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def serve_worker_metrics(port: int, host: str):
    """The Celery worker's own `/metrics` (a thread of its main process), behind the same
    credential as the web's; for a worker that shares no metrics folder with a web process."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    def app(environ, start_response):
        if not _allowed(environ.get("HTTP_AUTHORIZATION", ""), environ.get("REMOTE_ADDR", "")):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"Forbidden\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(_registry())]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = make_server(host, port, app, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server


# Celery: every task, whatever app defines it, through the signals. ----------------------

_started: dict[str, float] = {}


_connected = False


def connect_celery_signals() -> None:
    """Count every task's runs by state, and time them (once per process)."""
    global _connected
    if _connected:
        return
    _connected = True
    from celery import signals

    @signals.task_prerun.connect(weak=False)
    def _prerun(task_id=None, task=None, **_):
        _started[task_id] = time.monotonic()
        JOBS.labels(task.name, "started").inc()

    @signals.task_postrun.connect(weak=False)
    def _postrun(task_id=None, task=None, state=None, **_):
        began = _started.pop(task_id, None)
        if began is not None:
            JOB_SECONDS.labels(task.name).observe(time.monotonic() - began)
        JOBS.labels(task.name, (state or "unknown").lower()).inc()

    @signals.task_retry.connect(weak=False)
    def _retry(request=None, **_):
        JOBS.labels(getattr(request, "task", "unknown"), "retry").inc()

    @signals.worker_ready.connect(weak=False)
    def _serve(**_):
        port = settings.CUBEAI_METRICS_WORKER_PORT
        if port and _enabled():
            serve_worker_metrics(port, settings.CUBEAI_METRICS_WORKER_HOST)

    @signals.worker_process_shutdown.connect(weak=False)
    def _shutdown(pid=None, **_):
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(pid or os.getpid())
