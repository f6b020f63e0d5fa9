"""The inference pipeline, one service layer for every entry point.

Today the entry point is the OpenAI-compatible API (`inference/api.py`); a browser chat
consumer or a Celery job would call the same functions. Entry points translate their input
and output; this module authorizes, routes, forwards, meters and records, and
`inference/guard.py` applies the guardrails. Prompts and completions pass through memory
only.
"""

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import orjson

from domains import permissions
from inference import metering, upstream
from inference.context import Caller
from inference.errors import APIError, model_not_found, sse_error_event
from inference.registry import ModelEntry, Target, registry


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An OpenAI endpoint: its upstream path, the permission and the model task it needs."""

    name: str
    path: str
    permission: str
    task: str


CHAT = Endpoint("chat.completions", "chat/completions", permissions.CHAT, "chat")
COMPLETIONS = Endpoint("completions", "completions", permissions.COMPLETIONS, "completion")
EMBEDDINGS = Endpoint("embeddings", "embeddings", permissions.EMBEDDINGS, "embedding")
TRANSCRIPTIONS = Endpoint(
    "audio.transcriptions",
    "audio/transcriptions",
    permissions.AUDIO_TRANSCRIPTIONS,
    "transcription",
)
TRANSLATIONS = Endpoint(
    "audio.translations", "audio/translations", permissions.AUDIO_TRANSLATIONS, "translation"
)


@dataclass(slots=True)
class Call:
    """One API call in flight, and what will be recorded about it."""

    caller: Caller
    endpoint: Endpoint
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    target: Target | None = None
    stream: bool = False
    status: int = 200
    usage: dict = field(default_factory=dict)
    guardrails: dict = field(default_factory=dict)
    guard_headers: dict = field(default_factory=dict)
    rate_headers: dict = field(default_factory=dict)

    @property
    def response_headers(self) -> dict[str, str]:
        headers = {"x-request-id": self.request_id}
        if self.target is not None:
            headers["x-cube-backend-attestation"] = self.target.attestation
            headers["x-cube-tee"] = self.target.tee_type
            if self.target.tee_type == "none":
                headers["x-cube-confidential"] = "false"
        headers.update(self.guard_headers)
        headers.update(self.rate_headers)
        return headers

    def record(self, status: int | None = None) -> None:
        """Queue the usage and audit event of this call (no content)."""
        if status is not None:
            self.status = status
        usage = self.usage or {}
        metering.record(
            domain_id=self.caller.domain_id,
            user_id=self.caller.user_id,
            token_id=self.caller.token_id,
            request_id=self.request_id,
            endpoint=self.endpoint.name,
            model=self.model,
            backend=self.target.name if self.target else "",
            status=self.status,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            total_tokens=int(usage.get("total_tokens") or 0),
            latency_ms=(time.perf_counter() - self.started) * 1000,
            stream=self.stream,
            guardrails=self.guardrails,
            attestation=self.target.attestation if self.target else "",
        )


async def list_models(caller: Caller) -> list[ModelEntry]:
    caller.require(permissions.MODELS_READ)
    snapshot = await registry.current()
    return sorted(snapshot.models_for(caller.domain_id), key=lambda entry: entry.name)


async def get_model(caller: Caller, name: str) -> ModelEntry:
    caller.require(permissions.MODELS_READ)
    entry = (await registry.current()).model_for(caller.domain_id, name)
    if entry is None:
        raise model_not_found(name)
    return entry


async def route(
    call: Call, model: str, *, check_permission: bool = True
) -> tuple[ModelEntry, list[tuple[Target, str]]]:
    """Check the permission and find the deployments that may serve `model` for this call."""
    if check_permission:
        call.caller.require(call.endpoint.permission)
    call.model = model
    snapshot = await registry.current()
    entry = snapshot.model_for(call.caller.domain_id, model)
    if entry is None:
        raise model_not_found(model)
    if call.endpoint.task not in entry.tasks:
        raise APIError(
            400,
            f"The model `{model}` does not support {call.endpoint.name}.",
            param="model",
            code="model_not_supported",
        )
    candidates = registry.candidates(snapshot, entry)
    if not candidates:
        raise APIError(
            503,
            f"No healthy, attested backend is serving `{model}` right now; please retry.",
            code="backend_unavailable",
            type="server_error",
        )
    return entry, candidates


def _json_body(payload: dict) -> Callable[[str], bytes]:
    def body_for(upstream_model: str) -> bytes:
        return orjson.dumps({**payload, "model": upstream_model})

    return body_for


@asynccontextmanager
async def _exchange(
    call: Call, candidates, body_for, content_type: str | None = "application/json"
) -> AsyncIterator[aiohttp.ClientResponse]:
    """An upstream answer that is not an error, released (and counted done) afterwards."""
    target, response = await upstream.open_response(
        candidates,
        call.endpoint.path,
        request_id=call.request_id,
        body_for=body_for,
        content_type=content_type,
    )
    call.target = target
    try:
        if response.status >= 300:
            raise await upstream.normalised_error(response)
        yield response
    finally:
        response.release()
        upstream.done(target)


async def forward_json(call: Call, candidates, payload: dict) -> dict:
    """Send a JSON request and return the backend's JSON answer, with the public model name."""
    async with _exchange(call, candidates, _json_body(payload)) as response:
        try:
            body = orjson.loads(await response.read())
        except (orjson.JSONDecodeError, aiohttp.ClientError, TimeoutError) as exc:
            raise APIError(
                502, "The backend sent an invalid response.", type="server_error"
            ) from exc
    if not isinstance(body, dict):
        raise APIError(502, "The backend sent an invalid response.", type="server_error")
    if "model" in body:
        body["model"] = call.model
    call.usage = body.get("usage") or {}
    return body


async def forward_raw(call: Call, candidates, form_for) -> tuple[bytes, str]:
    """Send a multipart request; return the raw answer and its content type (audio formats)."""
    # aiohttp sets the multipart content type, with its boundary, itself.
    async with _exchange(call, candidates, form_for, content_type=None) as response:
        return await response.read(), response.headers.get("Content-Type", "application/json")


async def open_stream(call: Call, candidates, payload: dict):
    """Open the backend's event stream (failing over before the first byte)."""
    payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
    target, response = await upstream.open_response(
        candidates, call.endpoint.path, request_id=call.request_id, body_for=_json_body(payload)
    )
    call.target = target
    call.stream = True
    if response.status >= 300:
        try:
            raise await upstream.normalised_error(response)
        finally:
            response.release()
            upstream.done(target)
    return response


async def relay_stream(
    call: Call,
    response: aiohttp.ClientResponse,
    *,
    client_wants_usage: bool,
    guard,
    text_of,
) -> AsyncIterator[bytes]:
    """Relay the backend's SSE events chunk by chunk, then `data: [DONE]`.

    Usage is metered from the backend's usage chunk, which reaches the client only if it asked
    for it. A failure mid-stream becomes one error event, then the stream closes. If the
    client goes away the generator is closed, which releases the upstream connection.
    """
    status = 200
    finished_cleanly = False
    pending_usage: bytes | None = None
    template: dict = {}
    try:
        async for raw_line in response.content:
            line = raw_line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                finished_cleanly = True
                break
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                status = 502
                yield sse_error_event(
                    APIError(502, "The backend failed mid-stream.", type="server_error")
                )
                return
            if "model" in chunk:
                chunk["model"] = call.model
            if chunk.get("usage"):
                call.usage = chunk["usage"]
            if not chunk.get("choices") and chunk.get("usage"):
                if client_wants_usage:
                    pending_usage = b"data: " + orjson.dumps(chunk) + b"\n\n"
                continue
            if not client_wants_usage:
                chunk.pop("usage", None)
            if not template:
                # id, object, created, model: the same on every chunk; for the guard's tails.
                template = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
            blocked = guard.sanitize(chunk, text_of)
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            if blocked:
                finished_cleanly = True
                break
        else:
            # The backend closed without [DONE]: the stream was cut.
            status = 502
            yield sse_error_event(
                APIError(502, "The backend closed the stream early.", type="server_error")
            )
            return
        for tail in guard.tails(template, text_of):
            yield tail
        if pending_usage is not None:
            yield pending_usage
        yield b"data: [DONE]\n\n"
    except (aiohttp.ClientError, TimeoutError):
        status = 502
        yield sse_error_event(
            APIError(502, "The backend stream failed or stalled.", type="server_error")
        )
    finally:
        response.release()
        if call.target is not None:
            upstream.done(call.target)
        call.guardrails["output"] = guard.audit()
        call.record(status if finished_cleanly or status != 200 else 499)
