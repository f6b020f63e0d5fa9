"""The inference pipeline: every rule of every request, in one place, for every entry point.

    rate limit ─► model access and routing ─► capabilities and context length
      ─► input guardrails ─► forward or stream, failing over ─► output guardrails
      ─► metering and audit

Three entry points call it and nothing else: the OpenAI-compatible API (`inference/api.py`),
the browser chat's WebSocket consumer, and the Celery tasks of transcription jobs. Each
turns its input into a `Caller` and validated parameters, calls one function per
operation (`chat`, `completion`, `embedding`, `transcription`, `translation`), and shapes
what comes back: a `Reply` (a whole answer) or a `Stream` (chunk objects, already through
the output guardrails). Failures are `inference.errors.InferenceError`s, which each entry
point maps once (the API to OpenAI's envelope). Prompts, completions and audio pass through
memory only; what is recorded is counts, never content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from django.conf import settings

from cubeai import metrics
from cubeai.exceptions import DomainError
from domains import permissions
from guardrails import Classification
from inference import accesslog, guard, metering, upstream
from inference.context import Caller
from inference.errors import (
    ContextLengthExceeded,
    InferenceError,
    InvalidParameter,
    ModelNotFound,
    ModelNotSupported,
    NoBackend,
    UnsupportedParameter,
    UpstreamFailed,
)
from inference.registry import ModelEntry, Target, registry
from limits import gate

log = logging.getLogger(__name__)

# A model name as any entry point may pass it: no control character (a NUL, stored with the
# usage row, failed PostgreSQL's whole batch insert).
MODEL_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An operation: its name in usage records, its upstream path, the permission and the
    model task it needs, and the kind of request it is for the guardrails' field list."""

    name: str
    path: str
    permission: str | None
    task: str
    kind: str


CHAT = Endpoint("chat.completions", "chat/completions", permissions.CHAT, "chat", "chat")
COMPLETIONS = Endpoint(
    "completions", "completions", permissions.COMPLETIONS, "completion", "completion"
)
EMBEDDINGS = Endpoint("embeddings", "embeddings", permissions.EMBEDDINGS, "embedding", "embedding")
TRANSCRIPTIONS = Endpoint(
    "audio.transcriptions",
    "audio/transcriptions",
    permissions.AUDIO_TRANSCRIPTIONS,
    "transcription",
    "audio",
)
TRANSLATIONS = Endpoint(
    "audio.translations",
    "audio/translations",
    permissions.AUDIO_TRANSLATIONS,
    "translation",
    "audio",
)
# A guard model's call, made by the guardrails on the caller's behalf: metered and limited
# under the caller's domain like any call, needing no permission of its own.
GUARD = Endpoint("guardrails.classify", "chat/completions", None, "chat", "chat")


@dataclass(slots=True)
class Call:
    """One call in flight, and what will be recorded about it (never its content)."""

    caller: Caller
    endpoint: Endpoint
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    target: Target | None = None
    upstream_model: str = ""
    stream: bool = False
    status: int = 200
    usage: dict = field(default_factory=dict)
    # "backend" when the backend reported usage, "gateway" when the gateway counted it.
    usage_source: str = "backend"
    guardrails: dict = field(default_factory=dict)
    guard_headers: dict = field(default_factory=dict)
    rate_headers: dict = field(default_factory=dict)
    # The limits' reservation of this call, settled when it is recorded.
    ticket: gate.Ticket | None = None
    upstream_ms: float | None = None
    # A stream's deadline for its first chunk, on the event loop's clock (`open_stream`).
    first_byte_by: float | None = None
    # The stream's relay ran to its end (the recording may still wait for a token count).
    relayed: bool = False
    # The relay has more chunks of the same read of the backend's stream to yield, with no
    # wait in between: the API writes them to the client together (`Stream.more_ready`).
    more_ready: bool = False
    recorded: bool = False

    @property
    def headers(self) -> dict[str, str]:
        """What every answer to this call says: its id, the serving backend's attestation
        (and that it is not confidential, for a backend without a TEE), guardrails, limits."""
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
        """Queue the usage and audit event of this call, once (no content)."""
        if self.recorded:
            return
        self.recorded = True
        if status is not None:
            self.status = status
        usage = self.usage
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
        latency_ms = (time.perf_counter() - self.started) * 1000
        if self.ticket is not None:
            gate.settle_later(self.ticket, total_tokens=total, domain_id=self.caller.domain_id)
        self._observe(latency_ms, prompt, completion)
        metering.record(
            domain_id=self.caller.domain_id,
            user_id=self.caller.user_id,
            token_id=self.caller.token_id,
            request_id=self.request_id,
            endpoint=self.endpoint.name,
            model=self.model,
            backend=self.target.name if self.target else "",
            status=self.status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            usage_source=self.usage_source,
            latency_ms=latency_ms,
            stream=self.stream,
            guardrails=self.guardrails,
            attestation=self.target.attestation if self.target else "",
        )

    def _observe(self, latency_ms: float, prompt: int, completion: int) -> None:
        """Metrics and the access log line of this call (counts and timings only)."""
        snapshot = registry.snapshot
        known = self.target is not None or (snapshot is not None and self.model in snapshot.models)
        model = metrics.model_label(self.model, known)
        metrics.observe_call(
            endpoint=self.endpoint.name,
            model=model,
            status=self.status,
            seconds=latency_ms / 1000,
        )
        guard_ms = self.guard_headers.get("x-guardrails-time-ms")
        if guard_ms is not None:
            metrics.GUARDRAILS_SECONDS.labels(self.endpoint.name).observe(float(guard_ms) / 1000)
        accesslog.write(
            {
                "request_id": self.request_id,
                "domain": self.caller.domain_id,
                "token_id": self.caller.token_id,
                "user_id": self.caller.user_id,
                "endpoint": self.endpoint.name,
                "model": model,
                "backend": self.target.name if self.target else "",
                "status": self.status,
                "stream": self.stream,
                "latency_ms": round(latency_ms, 1),
                "upstream_ms": None if self.upstream_ms is None else round(self.upstream_ms, 1),
                "guardrails_ms": None if guard_ms is None else float(guard_ms),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "usage_source": self.usage_source,
            }
        )


@dataclass(slots=True)
class Reply:
    """A whole answer: a JSON body (or raw bytes with their content type, for audio)."""

    call: Call
    body: dict | bytes
    content_type: str = "application/json"


@dataclass(slots=True)
class Audio:
    """An audio request: the upload and its validated form fields (`model` included)."""

    data: bytes
    filename: str
    content_type: str
    fields: dict[str, Any]


class Stream:
    """A streamed completion: OpenAI chunk objects, through the output guardrails, in order.

    Iterate it once. The last chunk carries usage only if the client asked for it
    (`stream_options.include_usage`). A failure of the backend mid-stream is raised from
    the iteration as an `UpstreamFailed`. Close it (`aclose`) to stop early: that cancels
    the upstream request; the call is recorded either way, with the tokens delivered.
    """

    def __init__(
        self, call: Call, chunks: AsyncIterator[dict], response: aiohttp.ClientResponse
    ) -> None:
        self.call = call
        self._chunks = chunks
        # A stream dropped before it was iterated (its client left at once) still releases
        # the backend's connection and is recorded.
        weakref.finalize(self, _abandoned, call, response)

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._chunks

    @property
    def more_ready(self) -> bool:
        """Whether the next chunk is already here (it came in the same read of the
        backend's stream as the last one): a writer can wait for it before writing."""
        return self.call.more_ready

    async def aclose(self) -> None:
        await self._chunks.aclose()


def _abandoned(call: Call, response: aiohttp.ClientResponse) -> None:
    if not call.relayed:
        metrics.STREAMS_IN_FLIGHT.dec()
        response.release()
        upstream.done(call.target)
        call.record(499)


# Models -----------------------------------------------------------------------------------


async def list_models(caller: Caller) -> tuple[list[ModelEntry], dict[str, str]]:
    """The models the caller's domain may use, by name, and the `x-ratelimit-*` headers."""
    headers = await _admit_lookup(caller)
    snapshot = await registry.current()
    return sorted(snapshot.models_for(caller.domain_id), key=lambda entry: entry.name), headers


async def get_model(caller: Caller, name: str) -> tuple[ModelEntry, dict[str, str]]:
    headers = await _admit_lookup(caller)
    entry = (await registry.current()).model_for(caller.domain_id, name)
    if entry is None:
        raise ModelNotFound(name)
    return entry, headers


async def _admit_lookup(caller: Caller) -> dict[str, str]:
    """The request limits (one request, no tokens), then the permission, as for a call."""
    headers = await admit_request(caller)
    caller.require(permissions.MODELS_READ)
    return headers


async def admit_request(caller: Caller) -> dict[str, str]:
    """One request against the caller's request limits, no tokens and no budget (the model
    list, the transcription-job routes). Returns the answer's `x-ratelimit-*` headers;
    raises `RateLimited` (429 with `Retry-After`) when refused."""
    return await gate.admit_lookup(
        domain_id=caller.domain_id,
        token_id=caller.token_id,
        user_id=caller.user_id,
        on_reject=_count_rejection,
    )


# Operations -------------------------------------------------------------------------------


async def chat(caller: Caller, params: dict, *, request_id: str) -> Reply | Stream:
    """`POST /chat/completions`: a whole completion, or a `Stream` when `stream` is set."""
    return await _generate(Call(caller, CHAT, request_id), params)


async def completion(caller: Caller, params: dict, *, request_id: str) -> Reply | Stream:
    """`POST /completions`: a whole completion, or a `Stream` when `stream` is set."""
    return await _generate(Call(caller, COMPLETIONS, request_id), params)


async def embedding(caller: Caller, params: dict, *, request_id: str) -> Reply:
    """`POST /embeddings`."""
    call = Call(caller, EMBEDDINGS, request_id)
    async with _recorded(call):
        _, candidates = await _admit(call, params)
        params = await guard.check_request(call, params, classify=_classifier(call))
        body = await _forward_json(call, candidates, params)
        return Reply(call, body)


# Told each segment of a transcript as the backend decodes it, with the audio's duration in
# seconds; for transcription jobs, whose progress is the last segment's end over the duration.
OnSegment = Callable[[dict, float], Awaitable[None]]


async def transcription(
    caller: Caller, audio: Audio, *, request_id: str, on_segment: OnSegment | None = None
) -> Reply:
    """`POST /audio/transcriptions`: the backend's answer in the format asked for.

    With `on_segment`, the backend is asked to stream its transcript (`stream=true`), each
    segment is passed to `on_segment` as it comes, and the reply is the whole transcript in
    `verbose_json`'s fields, whatever `response_format` says.
    """
    return await _audio(Call(caller, TRANSCRIPTIONS, request_id), audio, on_segment)


async def translation(
    caller: Caller, audio: Audio, *, request_id: str, on_segment: OnSegment | None = None
) -> Reply:
    """`POST /audio/translations`: speech in any language as English text (`on_segment` as
    for `transcription`)."""
    return await _audio(Call(caller, TRANSLATIONS, request_id), audio, on_segment)


async def check_audio_job(caller: Caller, *, translate: bool, model: str) -> None:
    """At a transcription job's submission, what its run will check first: the permission
    and the model's access and task (a 403 or 404 now rather than a failed job). No backend
    is needed yet (the job waits for one), and the run itself is rate limited and metered."""
    call = Call(caller, TRANSLATIONS if translate else TRANSCRIPTIONS, "")
    with contextlib.suppress(NoBackend):
        await _route(call, model)


# The steps --------------------------------------------------------------------------------


class _recorded:
    """Run the steps of one call; a failure is recorded with its status, and leaves with
    the call's headers (request id, backend, limits) added to the error."""

    def __init__(self, call: Call, *, record_success: bool = True) -> None:
        self.call = call
        self.record_success = record_success

    async def __aenter__(self) -> Call:
        # This call records the request (the API's `accesslog.RequestRecord` then does not).
        accesslog.claim()
        return self.call

    async def __aexit__(self, kind, error, traceback) -> bool:
        if isinstance(error, InferenceError):
            error.headers = {**self.call.headers, **error.headers}
            if error.target is None:
                error.target = self.call.target
        if isinstance(error, DomainError):
            self.call.record(error.status)
        elif isinstance(error, asyncio.CancelledError):
            # The client left (or stopped the reply) before the answer began.
            self.call.record(499)
        elif error is not None:
            self.call.record(500)
        elif self.record_success:
            self.call.record()
        return False


async def _generate(call: Call, params: dict) -> Reply | Stream:
    stream = bool(params.get("stream"))
    async with _recorded(call, record_success=not stream):
        _, candidates = await _admit(call, params)
        params = await guard.check_request(call, params, classify=_classifier(call))
        if stream:
            return await _open_stream(call, candidates, params)
        body = await _forward_json(call, candidates, params)
        guard.check_response(call, body)
        return Reply(call, body)


async def _admit(call: Call, params: dict) -> tuple[ModelEntry, list[tuple[Target, str]]]:
    """Limits and budgets, permission, model access and routing, capabilities and context
    length."""
    model = params.get("model")
    if isinstance(model, str) and (await registry.current()).model_for(
        call.caller.domain_id, model
    ):
        call.model = model  # usage names a refused call's model only if it is one of ours
    call.ticket = await gate.admit(
        domain_id=call.caller.domain_id,
        token_id=call.caller.token_id,
        user_id=call.caller.user_id,
        cost=_reserve(call, params),
        stream=bool(params.get("stream")),
        on_reject=_count_rejection,
    )
    call.rate_headers = call.ticket.headers
    entry, candidates = await _route(call, params["model"])
    _check_capabilities(entry, params)
    return entry, candidates


async def _route(call: Call, model: str) -> tuple[ModelEntry, list[tuple[Target, str]]]:
    """The permission, then the deployments that may serve `model` for this call."""
    if call.endpoint.permission is not None:
        call.caller.require(call.endpoint.permission)
    if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
        # Refused before it is kept anywhere: the usage row of this call names no model.
        raise InvalidParameter(
            "Invalid value for 'model': a model name is 1 to 200 printable characters.",
            param="model",
        )
    snapshot = await registry.current()
    entry = snapshot.model_for(call.caller.domain_id, model)
    if entry is None:
        # Recorded without the name the client sent: usage lists it as "unknown model".
        raise ModelNotFound(model)
    call.model = model
    if call.endpoint.task not in entry.tasks:
        raise ModelNotSupported(
            f"The model `{model}` does not support {call.endpoint.name}.", param="model"
        )
    candidates = registry.candidates(snapshot, entry)
    if not candidates:
        raise NoBackend(
            f"No healthy, attested backend is serving `{model}` right now; please retry."
        )
    return entry, candidates


def _reserve(call: Call, params: dict) -> int:
    """The tokens to reserve up front: the prompt's estimate, plus the completion's most
    (`max_tokens`, else CUBEAI_LIMITS_COMPLETION_RESERVE) for the generating endpoints;
    settled with the real count when the call ends."""
    if call.endpoint.kind == "audio":
        return 0
    try:
        prompt = _estimate(guard.request_text(call.endpoint.kind, params))
    except Exception:
        prompt = 0
    if call.endpoint.kind == "embedding":
        return prompt
    most = params.get("max_completion_tokens") or params.get("max_tokens")
    if not isinstance(most, int) or most <= 0:
        most = settings.CUBEAI_LIMITS_COMPLETION_RESERVE
    return prompt + most


def _count_rejection(refused) -> None:
    limit = getattr(refused, "kind", None)
    if isinstance(refused, gate.Quota):
        limit = "monthly_budget"
    elif isinstance(refused, gate.Streams):
        limit = "concurrent_streams"
    else:
        limit = f"{limit}_per_minute"
    metrics.LIMIT_REJECTIONS.labels(limit, getattr(refused, "scope", "token")).inc()


def _check_capabilities(entry: ModelEntry, params: dict) -> None:
    """Refuse what the model's deployments cannot honour, naming the parameter."""
    response_format = params.get("response_format")
    wanted = {
        "n": (params.get("n") or 1) > 1 or (params.get("best_of") or 1) > 1,
        "tools": any(params.get(k) is not None for k in ("tools", "tool_choice")),
        "logprobs": bool(params.get("logprobs")) or params.get("top_logprobs") is not None,
        # Audio's `response_format` is the transcript's format, not structured output.
        "response_format": isinstance(response_format, dict)
        and response_format.get("type") not in (None, "text"),
        "dimensions": params.get("dimensions") is not None,
    }
    for capability, asked in wanted.items():
        if asked and capability not in entry.capabilities:
            raise UnsupportedParameter(
                f"`{capability}` is not supported by the model `{entry.name}`.",
                param=capability,
            )
    for name in ("max_tokens", "max_completion_tokens"):
        asked = params.get(name)
        if asked is not None and asked > entry.context_length:
            raise ContextLengthExceeded(
                f"`{name}` is {asked}, more than the context length of `{entry.name}` "
                f"({entry.context_length} tokens).",
                param=name,
            )


def _classifier(call: Call):
    """The guard-model callable of this call's guardrails: a call of its own (`GUARD`),
    routed, limited and metered under the caller's domain."""

    async def classify(text: str, model: str) -> Classification:
        guard_call = Call(call.caller, GUARD, call.request_id)
        params = {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "temperature": 0,
            "max_tokens": 8,
        }
        async with _recorded(guard_call):
            _, candidates = await _admit(guard_call, params)
            body = await _forward_json(guard_call, candidates, params)
        choice = (body.get("choices") or [{}])[0]
        label = (choice.get("message") or {}).get("content") or ""
        return Classification(label=label.split()[0].lower() if label.strip() else "", score=1.0)

    return classify


async def _forward_json(call: Call, candidates: list[tuple[Target, str]], params: dict) -> dict:
    """Send a JSON request; return the backend's JSON answer, with the public model name."""
    async with upstream.exchange(call, candidates, _json_body(params)) as response:
        raw = await response.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailed("The backend sent an invalid response.") from exc
    if not isinstance(body, dict):
        raise UpstreamFailed("The backend sent an invalid response.")
    if "model" in body:
        body["model"] = call.model
    _take_usage(call, body.get("usage"), params, body)
    return body


def _json_body(params: dict):
    def body_for(upstream_model: str) -> bytes:
        return orjson.dumps({**params, "model": upstream_model})

    return body_for


async def _audio(call: Call, audio: Audio, on_segment: OnSegment | None = None) -> Reply:
    async with _recorded(call):
        _, candidates = await _admit(call, audio.fields)
        fields = await guard.check_request(call, audio.fields, classify=_classifier(call))
        if on_segment is not None:
            fields = {**fields, "stream": "true"}

        def form_for(upstream_model: str) -> aiohttp.FormData:
            form = aiohttp.FormData()
            form.add_field(
                "file", audio.data, filename=audio.filename, content_type=audio.content_type
            )
            for name, value in {**fields, "model": upstream_model}.items():
                for item in value if isinstance(value, list) else [value]:
                    form.add_field(name, str(item))
            return form

        # aiohttp sets the multipart content type, with its boundary, itself.
        async with upstream.exchange(call, candidates, form_for, content_type=None) as response:
            if on_segment is not None:
                return Reply(call, await _transcript_events(call, response, on_segment))
            content = await response.read()
            content_type = response.headers.get("Content-Type", "application/json")
        return Reply(call, content, content_type)


async def _transcript_events(
    call: Call, response: aiohttp.ClientResponse, on_segment: OnSegment
) -> dict:
    """Read a backend's streamed transcript: each `transcript.text.delta` event's segment
    goes to `on_segment`; the `transcript.text.done` event is the whole transcript."""
    try:
        async for raw_line in response.content:
            line = raw_line.strip()
            if not line.startswith(b"data:"):
                continue
            try:
                event = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                continue
            if not isinstance(event, dict):
                continue
            if "error" in event:
                raise UpstreamFailed("The backend failed while transcribing.")
            kind = event.get("type")
            if kind == "transcript.text.delta" and isinstance(event.get("segment"), dict):
                await on_segment(event["segment"], float(event.get("duration") or 0.0))
            elif kind == "transcript.text.done":
                event.pop("type")
                return event
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise UpstreamFailed("The backend's transcript stream failed or stalled.") from None
    raise UpstreamFailed("The backend closed the transcript stream early.")


async def _open_stream(call: Call, candidates: list[tuple[Target, str]], params: dict) -> Stream:
    """Open the backend's event stream (failing over before the first byte)."""
    wants_usage = bool((params.get("stream_options") or {}).get("include_usage"))
    upstream_params = {**params, "stream": True, "stream_options": {"include_usage": True}}
    call.stream = True
    response = await upstream.open_stream(call, candidates, _json_body(upstream_params))
    metrics.STREAMS_IN_FLIGHT.inc()
    chunks = _relay(call, response, params, wants_usage, guard.StreamGuard(call))
    return Stream(call, chunks, response)


async def _relay(
    call: Call,
    response: aiohttp.ClientResponse,
    params: dict,
    wants_usage: bool,
    sanitizer: guard.StreamGuard,
) -> AsyncIterator[dict]:
    """The backend's chunks, in order, through the output guardrails.

    The lines of each read of the backend's stream (`upstream.line_batches`) are turned
    into chunks together, then yielded one by one with `call.more_ready` set while more of
    them follow. Usage is metered from the backend's usage chunk, which reaches the client
    only if it asked for it. Without one (the client left, the guardrails ended the stream,
    the backend cut it), the gateway counts the completion tokens delivered (one per chunk
    that carried text, counted as each is handed over) and estimates the prompt's.
    """
    status = 499
    delivered = 0
    template: dict = {}
    try:
        async for lines in upstream.line_batches(response, first_byte_by=call.first_byte_by):
            # The read's chunks (each with the texts it carries) and its usage report, in
            # order: a usage report counts once the chunks before it are handed over.
            batch: list[tuple[dict | None, int | dict]] = []
            done = blocked = failed = False
            for raw_line in lines:
                line = raw_line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    failed = True  # after the chunks that came before it
                    break
                if "model" in chunk:
                    chunk["model"] = call.model
                usage = chunk.pop("usage", None)
                if isinstance(usage, dict) and usage:
                    batch.append((None, usage))
                if not chunk.get("choices"):
                    continue
                if not template:
                    # id, object, created, model: the same on every chunk; for the tails.
                    template = {k: v for k, v in chunk.items() if k != "choices"}
                texts = sum(1 for choice in chunk["choices"] if guard.carries_text(choice))
                blocked = sanitizer.sanitize(chunk)
                batch.append((chunk, texts))
                if blocked:
                    break
            last = max((i for i, (chunk, _) in enumerate(batch) if chunk is not None), default=-1)
            for index, (chunk, value) in enumerate(batch):
                if chunk is None:
                    call.usage = value
                    continue
                delivered += value
                call.more_ready = index < last
                yield chunk
            if failed:
                status = 502
                raise UpstreamFailed("The backend failed mid-stream.")
            if blocked:
                # The guardrails ended the stream: stop the backend, count what was sent.
                call.usage = {}
                break
            if done:
                break
        else:
            status = 502
            raise UpstreamFailed("The backend closed the stream early.")
        for tail in sanitizer.tails(template):
            yield tail
        if not call.usage:
            _count_usage(call, params, completion_tokens=delivered)
        if wants_usage:
            yield {**template, "choices": [], "usage": call.usage}
        status = 200
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The backend's fault (a client that went away is a cancellation, not this).
        status = 504 if isinstance(exc, TimeoutError) else 502
        upstream.breaker_failure(call.target)
        raise UpstreamFailed("The backend stream failed or stalled.") from None
    finally:
        if not call.relayed:
            metrics.STREAMS_IN_FLIGHT.dec()
        call.relayed = True
        response.release()
        upstream.done(call.target)
        call.guardrails["output"] = sanitizer.audit()
        if call.usage:
            call.record(status)
        else:
            _count_usage(call, params, completion_tokens=delivered)
            _settle_later(call, params, status)


# Usage ------------------------------------------------------------------------------------

# Where the backend cannot count, a token is taken to be about four characters of text.
CHARS_PER_TOKEN = 4


def _take_usage(call: Call, usage: Any, params: dict, body: dict) -> None:
    """The backend's usage if it sent any; else the gateway's count of the answer."""
    if isinstance(usage, dict) and usage:
        call.usage = usage
        return
    texts = "".join(text for choice in body.get("choices") or () for text in _texts(choice))
    _count_usage(call, params, completion_tokens=_estimate(texts))


# Usage recordings waiting for a backend's token count; held here so none is collected.
_settling: set[asyncio.Task] = set()


def _settle_later(call: Call, params: dict, status: int) -> None:
    """Record the call once the backend has counted the prompt's tokens (off the request
    path: the client has its answer or is gone); the gateway's estimate stands otherwise."""
    task = asyncio.get_running_loop().create_task(_settle(call, params, status))
    _settling.add(task)
    task.add_done_callback(_settling.discard)


async def _settle(call: Call, params: dict, status: int) -> None:
    try:
        body = {key: params[key] for key in ("messages", "prompt") if key in params}
        if body and call.target is not None:
            counted = await upstream.count_prompt_tokens(call.target, call.upstream_model, body)
            if counted is not None:
                completion = call.usage["completion_tokens"]
                call.usage = {
                    "prompt_tokens": counted,
                    "completion_tokens": completion,
                    "total_tokens": counted + completion,
                }
    finally:
        call.record(status)


def _count_usage(call: Call, params: dict, *, completion_tokens: int) -> None:
    """Usage counted by the gateway: the completion tokens delivered, the prompt estimated
    from the request's text; marked as the gateway's count in the usage record."""
    prompt_tokens = _estimate(guard.request_text(call.endpoint.kind, params))
    call.usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    call.usage_source = "gateway"


def _estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _texts(choice: dict):
    for _, text in guard.response_texts(choice):
        yield text
