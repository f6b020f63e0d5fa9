"""The OpenAI-compatible API: `/proxy/<domain-id>/v1/...`, and attestation for clients.

Each operation parses the request (ninja validates JSON bodies against `inference.schemas`;
audio uploads are read here), calls `inference.pipeline`, and shapes OpenAI's answer: a
JSON body, an SSE stream (`sse`), or the error envelope. No rule lives here: auth,
limits, routing, guardrails and metering are the pipeline's.
"""

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Path, Router, Schema
from ninja.security.http import HttpBearer
from pydantic import ConfigDict, field_validator

from domains import permissions
from inference import access, accesslog, offpath, pipeline
from inference.attestation import selectors as attestation_selectors
from inference.attestation import services as attestation_services
from inference.context import caller_for
from inference.errors import InferenceError, RequestTooLarge, RouteNotFound, envelope
from inference.models import Backend
from inference.multipart import multipart_parse
from inference.schemas import (
    AUDIO_FORMATS,
    AttestationList,
    AttestationPolicyList,
    ChatCompletion,
    ChatCompletionCreateParams,
    Completion,
    CompletionCreateParams,
    CreateEmbeddingResponse,
    EmbeddingCreateParams,
    ErrorResponse,
    Model,
    ModelList,
    Transcription,
)
from limits import gate
from tokens.authentication import bearer_value

# Every method a client may send; under /proxy/ each gets OpenAI's envelope (405 with the
# right `Allow`, or 404), never Django's HTML.
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ERRORS = {code: ErrorResponse for code in (400, 401, 403, 404, 405, 413, 415, 429, 502, 503)}
# The 200 of the operations that can stream: JSON, or with `stream: true` an event stream.
STREAMS = {
    "responses": {
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "`data: {chunk}` events, then `data: [DONE]`; an error "
                        'after the stream began is one `data: {"error": {...}}` event.',
                    }
                }
            }
        }
    }
}


def request_id_of(request: HttpRequest) -> str:
    """The client's `x-request-id` if well-formed, else a new one; fixed once per request."""
    request_id = getattr(request, "cube_request_id", None)
    if request_id is None:
        given = request.headers.get("x-request-id", "")
        request_id = given if REQUEST_ID_RE.match(given) else f"req_{uuid.uuid4().hex}"
        request.cube_request_id = request_id
    return request_id


class PATBearer(HttpBearer):
    """`Authorization: Bearer <personal access token>`, resolved with the path's domain."""

    async def __call__(self, request: HttpRequest) -> Any:
        # Ninja's base class logs unexpected headers in DEBUG; a token must never be logged.
        raw = bearer_value(request.headers.get("Authorization", ""))
        if raw is None:
            return None
        return await self.authenticate(request, raw)

    async def authenticate(self, request: HttpRequest, token: str) -> Any:
        request_id_of(request)
        domain_id = request.resolver_match.kwargs.get("domain_id", "")
        try:
            domain_id = str(uuid.UUID(domain_id))
        except ValueError:
            raise RouteNotFound() from None
        caller = await caller_for(token, domain_id, request.META.get("REMOTE_ADDR") or "")
        if caller is not None:
            accesslog.authenticated(
                domain_id=caller.domain_id, token_id=caller.token_id, user_id=caller.user_id
            )
        return caller


router = Router(auth=PATBearer(), tags=["OpenAI-compatible API"])
attestation_router = Router(auth=PATBearer(), tags=["Attestation"])


# Shaping answers --------------------------------------------------------------------------


def _with_headers(response: HttpResponse, headers: dict[str, str]) -> HttpResponse:
    for name, value in headers.items():
        response[name] = value
    return response


def _json(body: Any, headers: dict[str, str]) -> HttpResponse:
    return _with_headers(HttpResponse(orjson.dumps(body), content_type="application/json"), headers)


def answer(result: pipeline.Reply | pipeline.Stream) -> HttpResponse:
    """A pipeline result as HTTP: JSON (or the audio format asked for), or an SSE stream."""
    if isinstance(result, pipeline.Stream):
        response = StreamingHttpResponse(sse(result), content_type="text/event-stream")
        response["X-Accel-Buffering"] = "no"
        return _with_headers(response, result.call.headers)
    body = result.body if isinstance(result.body, bytes) else orjson.dumps(result.body)
    response = HttpResponse(body, content_type=result.content_type)
    return _with_headers(response, result.call.headers)


async def sse(stream: pipeline.Stream) -> AsyncIterator[bytes]:
    """OpenAI's event stream: `data: {chunk}` per chunk, then `data: [DONE]`; a failure
    after the stream began is one `data: {"error": ...}` event, then the stream closes. A
    client that goes away closes this generator, which closes the pipeline's stream."""
    try:
        # The chunks of one read of the backend's stream go out in one write.
        events = []
        async for chunk in stream:
            events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if not stream.more_ready:
                yield b"".join(events)
                events.clear()
        yield b"data: [DONE]\n\n"
    except InferenceError as error:
        yield b"data: " + orjson.dumps(envelope(error)) + b"\n\n"
    finally:
        await stream.aclose()


# Operations -------------------------------------------------------------------------------


@router.api_operation(
    ["POST"],
    "/chat/completions",
    response={200: ChatCompletion, **ERRORS},
    openapi_extra=STREAMS,
    summary="Create a chat completion",
)
async def chat_completions(
    request: HttpRequest, domain_id: Path[str], body: ChatCompletionCreateParams
):
    return answer(
        await pipeline.chat(request.auth, body.payload(), request_id=request_id_of(request))
    )


@router.api_operation(
    ["POST"],
    "/completions",
    response={200: Completion, **ERRORS},
    openapi_extra=STREAMS,
    summary="Create a completion",
)
async def completions(request: HttpRequest, domain_id: Path[str], body: CompletionCreateParams):
    return answer(
        await pipeline.completion(request.auth, body.payload(), request_id=request_id_of(request))
    )


@router.api_operation(
    ["POST"],
    "/embeddings",
    response={200: CreateEmbeddingResponse, **ERRORS},
    summary="Create embeddings",
)
async def embeddings(request: HttpRequest, domain_id: Path[str], body: EmbeddingCreateParams):
    return answer(
        await pipeline.embedding(request.auth, body.payload(), request_id=request_id_of(request))
    )


def _audio_form(request: HttpRequest) -> pipeline.Audio:
    """Validate an audio upload's fields like OpenAI does, before anything is sent upstream."""
    upload, fields = audio_upload(request)
    return pipeline.Audio(
        data=upload.read(),
        filename=upload.name or "audio",
        content_type=upload.content_type or "application/octet-stream",
        fields=fields,
    )


def audio_upload(request: HttpRequest, *, extra: frozenset[str] = frozenset()):
    """The upload (rewound) and the validated fields of an audio form; `extra` names form
    fields the endpoint reads itself (the jobs endpoint's `task`)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise InferenceError(
            "Audio endpoints take multipart/form-data.",
            status=415,
            code="unsupported_media_type",
        )
    multipart_parse(request)
    upload = request.FILES.get("file")
    if upload is None:
        raise InferenceError("The `file` field is required.", param="file")
    if upload.size == 0:
        raise InferenceError("The uploaded file is empty.", param="file")
    if upload.size > settings.CUBEAI_MAX_AUDIO_BYTES:
        # The body may pass the file's limit by the form around it (`limits.BodyLimit`).
        raise RequestTooLarge(settings.CUBEAI_MAX_AUDIO_BYTES)
    fields: dict[str, Any] = {}
    model = request.POST.get("model", "").strip()
    if not model:
        raise InferenceError("The `model` field is required.", param="model")
    fields["model"] = model
    response_format = request.POST.get("response_format", "json")
    if response_format not in AUDIO_FORMATS:
        raise InferenceError(
            f"`response_format` must be one of {', '.join(AUDIO_FORMATS)}.",
            param="response_format",
        )
    fields["response_format"] = response_format
    if "temperature" in request.POST:
        try:
            temperature = float(request.POST["temperature"])
        except ValueError:
            temperature = -1.0
        if not 0 <= temperature <= 1:
            raise InferenceError("`temperature` must be between 0 and 1.", param="temperature")
        fields["temperature"] = str(temperature)
    for name, limit in (("language", 16), ("prompt", 4000)):
        value = request.POST.get(name)
        if value:
            if len(value) > limit:
                raise InferenceError(f"`{name}` is too long.", param=name)
            fields[name] = value
    granularities = request.POST.getlist("timestamp_granularities[]")
    if any(g not in ("word", "segment") for g in granularities):
        raise InferenceError(
            "`timestamp_granularities[]` takes `word` and/or `segment`.",
            param="timestamp_granularities[]",
        )
    fields["timestamp_granularities[]"] = granularities
    known = {"model", "response_format", "temperature", "language", "prompt", *extra}
    unknown = set(request.POST) - known - {"timestamp_granularities[]"}
    if unknown:
        name = sorted(unknown)[0]
        raise InferenceError(f"Unrecognized request argument supplied: {name}", param=name)
    upload.seek(0)
    return upload, fields


AUDIO_DOC = {
    "responses": {
        200: {
            "content": {
                "text/plain": {
                    "schema": {"type": "string", "description": "response_format text, srt, vtt"}
                }
            }
        }
    },
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string"},
                        "language": {"type": "string"},
                        "prompt": {"type": "string"},
                        "response_format": {"type": "string", "enum": list(AUDIO_FORMATS)},
                        "temperature": {"type": "number"},
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["word", "segment"]},
                        },
                    },
                }
            }
        }
    },
}


@router.api_operation(
    ["POST"],
    "/audio/transcriptions",
    response={200: Transcription, **ERRORS},
    openapi_extra=AUDIO_DOC,
    summary="Transcribe audio",
)
async def audio_transcriptions(request: HttpRequest, domain_id: Path[str]):
    audio = _audio_form(request)
    return answer(
        await pipeline.transcription(request.auth, audio, request_id=request_id_of(request))
    )


@router.api_operation(
    ["POST"],
    "/audio/translations",
    response={200: Transcription, **ERRORS},
    openapi_extra=AUDIO_DOC,
    summary="Translate audio into English",
)
async def audio_translations(request: HttpRequest, domain_id: Path[str]):
    audio = _audio_form(request)
    return answer(
        await pipeline.translation(request.auth, audio, request_id=request_id_of(request))
    )


def _model_object(entry) -> dict:
    return {
        "id": entry.name,
        "object": "model",
        "created": entry.created,
        "owned_by": entry.owned_by,
    }


@router.api_operation(
    ["GET"], "/models", response={200: ModelList, **ERRORS}, summary="List models"
)
async def list_models(request: HttpRequest, domain_id: Path[str]):
    entries, limits = await pipeline.list_models(request.auth)
    body = {"object": "list", "data": [_model_object(entry) for entry in entries]}
    return _json(body, {"x-request-id": request_id_of(request), **limits})


@router.api_operation(
    ["GET"], "/models/{path:model}", response={200: Model, **ERRORS}, summary="Retrieve a model"
)
async def retrieve_model(request: HttpRequest, domain_id: Path[str], model: str):
    entry, limits = await pipeline.get_model(request.auth, model)
    return _json(_model_object(entry), {"x-request-id": request_id_of(request), **limits})


def _method_not_allowed(on: Router, path: str, allowed: str) -> None:
    """OpenAI's envelope for the other methods on a known path (ninja routes only `allowed`
    to the real view, so this is the one place a method is checked). A CORS preflight from
    an allowed origin never gets here (`inference.cors`)."""
    others = [m for m in ALL_METHODS if m != allowed]

    def refuse(request: HttpRequest):
        raise InferenceError(
            f"Method {request.method} is not allowed here; use {allowed}.",
            status=405,
            code="method_not_allowed",
            headers={"Allow": allowed},
        )

    async def not_allowed(request: HttpRequest):
        refuse(request)

    async def not_allowed_model(request: HttpRequest, model: str):
        refuse(request)

    view = not_allowed_model if "{path:model}" in path else not_allowed
    on.api_operation(others, path, auth=None, include_in_schema=False)(view)


for _path in (
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/audio/transcriptions",
    "/audio/translations",
):
    _method_not_allowed(router, _path, "POST")
_method_not_allowed(router, "/models", "GET")
_method_not_allowed(router, "/models/{path:model}", "GET")


@router.api_operation(ALL_METHODS, "/{path:rest}", auth=None, include_in_schema=False)
async def unknown_route(request: HttpRequest, rest: str):
    raise RouteNotFound()


# Attestation for clients: `/proxy/<domain-id>/attestation` and `.../attestation/policy` --
#
# A client sends its own nonce; the platform forwards it to each backend's agent and returns
# the fresh evidence as the agent sent it (so the client can verify it independently, e.g.
# with `scripts/verify_attestation.py`), the parsed claims, the certificate chain and the
# platform's own verification. Only backends serving a model the domain may use are shown;
# any other backend is answered as if it did not exist.

NONCE_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class AttestationIn(Schema):
    """`nonce`: 32 random bytes as 64 hex digits; `backend` or `model` narrows the answer."""

    model_config = ConfigDict(extra="forbid")

    nonce: str
    backend: str | None = None
    model: str | None = None

    @field_validator("nonce")
    @classmethod
    def _nonce(cls, value: str) -> str:
        if not NONCE_RE.fullmatch(value):
            raise ValueError("must be 64 hexadecimal characters (32 random bytes)")
        return value.lower()


def _attested_backends(domain_id: str, *, backend: str | None, model: str | None) -> list:
    """The backends serving the domain, narrowed as asked; a name that serves nothing here
    is a 404, whether or not it exists elsewhere."""
    found = access.backends_serving(domain_id, model=model, backend=backend)
    if not found and (backend is not None or model is not None):
        param = "backend" if backend is not None else "model"
        raise InferenceError(
            f"No {param} of that name serves this domain.",
            status=404,
            param=param,
            code=f"{param}_not_found",
        )
    return found


@attestation_router.post(
    "/attestation", url_name="attestation", response={200: AttestationList, **ERRORS}
)
async def attestation(request: HttpRequest, domain_id: Path[str], body: AttestationIn):
    """Fresh evidence from each backend for the client's nonce, with the verification.
    Challenges cost the backends work: they are limited per token and per domain."""
    request_id_of(request)
    request.auth.require(permissions.ATTESTATION_READ)
    await gate.admit_challenge(domain_id=request.auth.domain_id, token_id=request.auth.token_id)
    backends = await offpath.run(
        "auth", _attested_backends, request.auth.domain_id, backend=body.backend, model=body.model
    )
    nonce = bytes.fromhex(body.nonce)
    data = []
    for backend in backends:
        challenge, pinned = await attestation_services.client_challenge(
            backend=backend, nonce=nonce
        )
        reply = challenge.reply or {}
        data.append(
            {
                "object": "attestation",
                "backend": backend.name,
                "tee_type": backend.tee_type,
                "confidential": backend.tee_type != Backend.TeeType.NONE,
                "status": backend.attestation_status,
                "attested_at": backend.attested_at.isoformat() if backend.attested_at else None,
                "binding": attestation_selectors.BINDING,
                # The agent's reply, untouched: what an independent verifier checks.
                "attestation": reply or None,
                "report_data": reply.get("report_data"),
                "tls_public_key": reply.get("tls_public_key"),
                "tls_public_key_sha256": challenge.key_sha256 or None,
                "pinned": bool(pinned) and challenge.key_sha256 == pinned,
                "verification": {
                    "ok": challenge.ok,
                    "failures": [failure.to_dict() for failure in challenge.result.failures],
                    "claims": challenge.result.claims,
                    "policy_version": challenge.policy_version,
                },
                "cert_chain": challenge.result.cert_chain,
            }
        )
    return {"object": "list", "nonce": body.nonce, "data": data}


@attestation_router.get(
    "/attestation/policy",
    url_name="attestation_policy",
    response={200: AttestationPolicyList, **ERRORS},
)
async def attestation_policy(request: HttpRequest, domain_id: Path[str]):
    """The active attestation policy of each backend serving the domain, with which fields
    are pinned and which open (`policy_fields`) and a warning for each open one."""
    request_id_of(request)
    request.auth.require(permissions.ATTESTATION_READ)

    def load() -> list[dict]:
        backends = access.backends_serving(request.auth.domain_id)
        return [attestation_selectors.policy_export(backend=backend) for backend in backends]

    return {"object": "list", "data": await offpath.run("auth", load)}


_method_not_allowed(attestation_router, "/attestation", "POST")
_method_not_allowed(attestation_router, "/attestation/policy", "GET")
