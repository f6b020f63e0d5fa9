"""What is recorded of each request to the OpenAI-compatible API: its metrics samples and its
one JSON line on the `cubeai.requests` logger (ids, status and timings, never content).

A call that reaches the pipeline records itself once (`pipeline.Call.record`, which knows
the model, backend and tokens). Every other answer under /proxy/ — refused before the
pipeline (401, 400, 404, 405, 413, 415, the failed-auth 429...), or an operation with no
pipeline call (the model list, attestation, the jobs API) — is recorded by `RequestRecord`,
ASGI middleware outside everything else on the path, so that it also sees the body limits'
413 and 408. The pipeline marks the request as its own (`claim`) when a call begins, so no
request is counted twice. Labels stay bounded: the endpoint comes from a fixed table of the
API's paths ("unknown" for any other), and the model is always "unknown" here.
"""

import contextvars
import logging
import re
import time
import uuid
from dataclasses import dataclass

import orjson

from cubeai import metrics

# One JSON line per request (cubeai.settings.LOGGING): ids, counts and timings, never content.
access_log = logging.getLogger("cubeai.requests")

API_PATH = re.compile(r"^/proxy/(?P<domain>[^/]+)/(?P<rest>.*)$")
# The API's paths (after `/proxy/<domain-id>/`) and their endpoint label; the pipeline's
# operations use the same names as their calls (`pipeline.Endpoint.name`).
ENDPOINTS = (
    (re.compile(r"v1/chat/completions"), "chat.completions"),
    (re.compile(r"v1/completions"), "completions"),
    (re.compile(r"v1/embeddings"), "embeddings"),
    (re.compile(r"v1/audio/transcriptions"), "audio.transcriptions"),
    (re.compile(r"v1/audio/translations"), "audio.translations"),
    (re.compile(r"v1/audio/transcriptions/jobs(/[^/]+(/result)?)?"), "audio.transcriptions.jobs"),
    (re.compile(r"v1/models(/.+)?"), "models"),
    (re.compile(r"attestation"), "attestation"),
    (re.compile(r"attestation/policy"), "attestation.policy"),
)


@dataclass(slots=True)
class Pending:
    """A request in flight under /proxy/: whether the pipeline took it, and who made it."""

    claimed: bool = False
    domain_id: str = ""
    token_id: int | None = None
    user_id: int | None = None


_pending: contextvars.ContextVar[Pending | None] = contextvars.ContextVar(
    "cubeai_pending_request", default=None
)


def claim() -> None:
    """A pipeline call begins for this request: it records the request itself."""
    pending = _pending.get()
    if pending is not None:
        pending.claimed = True


def authenticated(*, domain_id: str, token_id: int | None, user_id: int) -> None:
    """The request's caller is known: its line names the domain, token id and user."""
    pending = _pending.get()
    if pending is not None:
        pending.domain_id, pending.token_id, pending.user_id = domain_id, token_id, user_id


def write(line: dict) -> None:
    access_log.info(orjson.dumps({"event": "request", **line}).decode())


def endpoint_of(path: str) -> tuple[str, str]:
    """The endpoint label of an API path, and the domain id it names (a UUID, else "")."""
    match = API_PATH.match(path)
    if match is None:
        return "unknown", ""
    try:
        domain_id = str(uuid.UUID(match["domain"]))
    except ValueError:
        domain_id = ""
    rest = match["rest"]
    for pattern, name in ENDPOINTS:
        if pattern.fullmatch(rest):
            return name, domain_id
    return "unknown", domain_id


class RequestRecord:
    """ASGI middleware: record each /proxy/ request the pipeline did not (see the module)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/proxy/"):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        pending = Pending()
        answer = {"status": 499, "request_id": ""}  # 499: the client left before an answer

        async def watching_send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        answer["request_id"] = value.decode("latin-1")
            await send(message)

        reset = _pending.set(pending)
        try:
            await self.app(scope, receive, watching_send)
        except BaseException:
            if answer["status"] == 499:
                answer["status"] = 500
            raise
        finally:
            _pending.reset(reset)
            if not pending.claimed:
                _record(scope["path"], pending, answer, time.perf_counter() - started)


def _record(path: str, pending: Pending, answer: dict, seconds: float) -> None:
    endpoint, path_domain = endpoint_of(path)
    status = answer["status"]
    metrics.observe_call(endpoint=endpoint, model="unknown", status=status, seconds=seconds)
    write(
        {
            "request_id": answer["request_id"],
            "domain": pending.domain_id or path_domain,
            "token_id": pending.token_id,
            "user_id": pending.user_id,
            "endpoint": endpoint,
            "model": "unknown",
            "backend": "",
            "status": status,
            "stream": False,
            "latency_ms": round(seconds * 1000, 1),
            "upstream_ms": None,
            "guardrails_ms": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "usage_source": "",
        }
    )
