"""The agent's ASGI app: OpenAI-compatible endpoints, health, metrics and attestation.

Handlers only parse input, pick the runtime by model id and shape OpenAI responses; the
runtimes in ``agent/runtimes`` do the work. Errors of every kind leave as OpenAI's error
envelope. Prompts, completions and audio are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent import attestation as tee
from agent.config import AgentConfig, ConfigError
from agent.credentials import (
    OPEN_PATHS,
    CredentialError,
    CredentialStore,
    ProvisioningRefused,
    load_public_key,
)
from agent.errors import (
    AgentError,
    frames_of,
    invalid_request,
    model_not_found,
    server_error,
)
from agent.metrics import AgentMetrics
from agent.models import Runtimes, load_runtimes
from agent.runtimes import (
    Segment,
    TextEndpoint,
    TextGenerator,
    Transcriber,
    TranscriptionOptions,
)
from agent.schemas import (
    AttestationRequest,
    ChatCompletionRequest,
    CompletionRequest,
    CredentialProvisioning,
    EmbeddingRequest,
    parse,
)
from agent.transcripts import RESPONSE_FORMATS, SAMPLE_RATE, decode_audio, render

logger = logging.getLogger(__name__)

# OpenAI's limit on uploaded audio.
MAX_AUDIO_BYTES = 25 * 1024 * 1024
TRANSCRIPTION_FIELDS = {
    "file",
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "stream",
}
TRANSLATION_FIELDS = TRANSCRIPTION_FIELDS - {"language", "timestamp_granularities[]"}


class ORJSONResponse(JSONResponse):
    """JSON encoded by orjson: large embedding arrays encode several times faster."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def credential_store_for(config: AgentConfig, tls_key: bytes | None) -> CredentialStore:
    """The agent's accepted credentials; without any source it could serve nobody."""
    if config.credentials_file is None and config.platform_key is None:
        raise ConfigError(
            "no credential source: set CUBEAI_AGENT_CREDENTIALS_FILE or CUBEAI_AGENT_PLATFORM_KEY "
            "(every /v1 request needs the platform's credential)"
        )
    try:
        return CredentialStore(
            path=config.credentials_file,
            platform_key=load_public_key(config.platform_key) if config.platform_key else None,
            tls_key=tls_key,
        )
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None


def create_app(config: AgentConfig) -> Starlette:
    """Build the agent app; models load in its lifespan, once, before it serves."""
    metrics = AgentMetrics()
    provider = tee.select_provider(config.attestation, config.tsm_path)
    tls_key = tee.tls_public_key_der(config.tls_cert)
    credentials = credential_store_for(config, tls_key)
    metrics.info.info({"attestation": provider.name, "confidential": str(provider.confidential)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtimes = await asyncio.to_thread(load_runtimes, config)
        app.state.runtimes = runtimes
        logger.info(
            "serving %s; attestation provider %s", ", ".join(runtimes.model_ids()), provider.name
        )
        try:
            yield
        finally:
            await runtimes.aclose()

    def runtimes_of(request: Request) -> Runtimes:
        return request.app.state.runtimes

    async def health(request: Request) -> Response:
        # Open to anyone: liveness only. What the agent serves is behind the credential
        # (`/v1/models`); what it runs on, in its attestation.
        return ORJSONResponse({"status": "ok"})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def list_models(request: Request) -> Response:
        runtimes = runtimes_of(request)
        return ORJSONResponse(
            {"object": "list", "data": [_model_object(runtimes, m) for m in runtimes.model_ids()]}
        )

    async def retrieve_model(request: Request) -> Response:
        runtimes = runtimes_of(request)
        model_id = request.path_params["model"]
        if model_id not in runtimes.owned_by:
            raise model_not_found(model_id, endpoint="any endpoint")
        return ORJSONResponse(_model_object(runtimes, model_id))

    async def chat_completions(request: Request) -> Response:
        req = parse(ChatCompletionRequest, await _json(request))
        runtime = _pick(runtimes_of(request).chat, req.model, "chat completions", request)
        return await _generate(runtime, "chat", req.payload(), req.stream)

    async def completions(request: Request) -> Response:
        req = parse(CompletionRequest, await _json(request))
        runtime = _pick(runtimes_of(request).completions, req.model, "completions", request)
        return await _generate(runtime, "completions", req.payload(), req.stream)

    async def _generate(
        runtime: TextGenerator, endpoint: TextEndpoint, payload: dict[str, Any], stream: bool
    ) -> Response:
        if not stream:
            if "stream_options" in payload:
                raise invalid_request(
                    "'stream_options' is only allowed when 'stream' is true.",
                    param="stream_options",
                )
            result = await runtime.generate(endpoint, payload)
            metrics.count_usage(runtime.model_id, result.get("usage"))
            return ORJSONResponse(result)
        client_wants_usage = bool(payload.get("stream_options", {}).get("include_usage"))
        # Always ask for usage so the agent can meter; drop it if the client did not ask.
        payload["stream_options"] = {"include_usage": True}
        chunks = runtime.stream(endpoint, payload)
        started = time.perf_counter()
        # Pull the first chunk before answering, so errors found before any output (a
        # prompt too long for the context) are a proper HTTP 400, not an event in a 200.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        return StreamingResponse(
            _sse(runtime.model_id, endpoint, first, chunks, client_wants_usage, started),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _sse(
        model: str,
        endpoint: TextEndpoint,
        first: dict | None,
        chunks: AsyncIterator[dict],
        client_wants_usage: bool,
        started: float,
    ) -> AsyncIterator[bytes]:
        seen_content = False
        try:
            pending = [first] if first is not None else []
            while True:
                chunk = pending.pop() if pending else await anext(chunks, None)
                if chunk is None:
                    break
                # llama.cpp attaches usage to the last choice chunk of completions; OpenAI
                # sends it in a chunk of its own with no choices, so split it off.
                usage = chunk.pop("usage", None)
                if chunk.get("choices"):
                    if not seen_content and _has_content(chunk):
                        seen_content = True
                        metrics.first_token.labels(endpoint, model).observe(
                            time.perf_counter() - started
                        )
                    yield _event(chunk)
                if usage:
                    metrics.count_usage(model, usage)
                    if client_wants_usage:
                        yield _event({**chunk, "choices": [], "usage": usage})
        except AgentError as exc:
            yield _event(exc.envelope())
            return
        except Exception as exc:
            logger.error("stream from %s failed: %s", model, frames_of(exc))
            error = server_error("The model runtime failed while streaming.")
            yield _event(error.envelope())
            return
        finally:
            await chunks.aclose()
        yield b"data: [DONE]\n\n"

    async def embeddings(request: Request) -> Response:
        req = parse(EmbeddingRequest, await _json(request))
        runtime = _pick(runtimes_of(request).embeddings, req.model, "embeddings", request)
        if req.dimensions is not None:
            raise invalid_request(
                f"The model '{req.model}' does not support the 'dimensions' parameter; "
                "it always returns its full-size embeddings.",
                param="dimensions",
                code="unsupported_parameter",
            )
        result = await runtime.embed(req.inputs())
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": base64.b64encode(vector.astype("<f4").tobytes()).decode()
                if req.encoding_format == "base64"
                else vector,
            }
            for index, vector in enumerate(result.vectors)
        ]
        usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
        metrics.count_usage(runtime.model_id, usage)
        return ORJSONResponse({"object": "list", "data": data, "model": req.model, "usage": usage})

    async def transcriptions(request: Request) -> Response:
        return await _audio(request, "transcribe")

    async def translations(request: Request) -> Response:
        return await _audio(request, "translate")

    async def _audio(request: Request, task: str) -> Response:
        allowed = TRANSCRIPTION_FIELDS if task == "transcribe" else TRANSLATION_FIELDS
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise invalid_request("Send the audio as multipart/form-data with a 'file' field.")
        async with request.form(max_files=1, max_fields=32) as form:
            unknown = sorted(set(form.keys()) - allowed)
            if unknown:
                raise invalid_request(f"Unsupported parameter: '{unknown[0]}'.", param=unknown[0])
            model = _field(form, "model")
            if not model:
                raise invalid_request("Missing required parameter: 'model'.", param="model")
            runtimes = runtimes_of(request)
            table = runtimes.transcriptions if task == "transcribe" else runtimes.translations
            endpoint = "transcriptions" if task == "transcribe" else "translations"
            runtime = _pick(table, model, endpoint, request)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise invalid_request("Missing required parameter: 'file'.", param="file")
            data = await upload.read(MAX_AUDIO_BYTES + 1)
            options, response_format = _audio_options(form, task)
            stream = _stream_flag(form)
        if len(data) > MAX_AUDIO_BYTES:
            raise AgentError(
                "The audio file is larger than the 25 MB limit.", status=413, param="file"
            )
        audio = await asyncio.to_thread(decode_audio, data)
        if stream:
            return await _audio_stream(runtime, audio, options, task)
        transcript = await runtime.transcribe(audio, options)
        metrics.audio_seconds.labels(runtime.model_id).inc(transcript.duration)
        body, media_type = render(
            transcript, response_format, task="transcribe" if task == "transcribe" else "translate"
        )
        if isinstance(body, dict):
            return ORJSONResponse(body)
        return PlainTextResponse(body, media_type=media_type)

    async def _audio_stream(
        runtime: Transcriber, audio: Any, options: TranscriptionOptions, task: str
    ) -> Response:
        """The transcript as an event stream, one event per segment as it is decoded:
        `transcript.text.delta` (OpenAI's event, with the segment and the audio's duration
        added, so a client can tell how far the decoding is), then `transcript.text.done`
        with the whole transcript in `verbose_json`'s fields. Errors found before the first
        segment (an unsupported language) are a plain HTTP error."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Segment | None] = asyncio.Queue()
        listening = True
        duration = round(audio.size / SAMPLE_RATE, 3)

        def on_segment(segment: Segment) -> bool:
            # Called from the decoding thread; False stops the decoding (the client left).
            if listening:
                loop.call_soon_threadsafe(queue.put_nowait, segment)
            return listening

        job = asyncio.ensure_future(runtime.transcribe(audio, options, on_segment))
        job.add_done_callback(lambda _: queue.put_nowait(None))
        first = await queue.get()
        if first is None and job.exception() is not None:
            raise job.exception()

        async def events() -> AsyncIterator[bytes]:
            nonlocal listening
            try:
                segment = first
                while segment is not None:
                    yield _event(
                        {
                            "type": "transcript.text.delta",
                            "delta": segment.text,
                            "segment": asdict(segment),
                            "duration": duration,
                        }
                    )
                    segment = await queue.get()
                transcript = job.result()
                metrics.audio_seconds.labels(runtime.model_id).inc(transcript.duration)
                body, _ = render(transcript, "verbose_json", task=task)
                yield _event({"type": "transcript.text.done", **body})
            except AgentError as exc:
                yield _event(exc.envelope())
            except Exception as exc:
                logger.error("audio stream of %s failed: %s", runtime.model_id, frames_of(exc))
                yield _event(server_error("The model runtime failed while decoding.").envelope())
            finally:
                listening = False

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def attestation(request: Request) -> Response:
        req = parse(AttestationRequest, await _json(request))
        try:
            nonce = bytes.fromhex(req.nonce)
        except ValueError:
            nonce = b""
        if len(nonce) != tee.NONCE_BYTES:
            raise invalid_request(
                f"'nonce' must be {tee.NONCE_BYTES * 2} hexadecimal characters "
                f"({tee.NONCE_BYTES} random bytes).",
                param="nonce",
            )
        request.state.model = provider.name
        reply = await asyncio.to_thread(tee.attest, provider, nonce, tls_key)
        # The platform may provision a credential against this nonce, right after it has
        # verified this very reply.
        credentials.remember_nonce(nonce)
        return ORJSONResponse(reply)

    async def provision_credential(request: Request) -> Response:
        req = parse(CredentialProvisioning, await _json(request))
        try:
            signature = base64.b64decode(req.signature, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_request("'signature' must be base64.", param="signature") from None
        try:
            result = await asyncio.to_thread(
                credentials.provision,
                credential=req.credential,
                version=req.version,
                previous_valid_seconds=req.previous_valid_seconds,
                nonce=bytes.fromhex(req.nonce),
                signature=signature,
            )
        except ProvisioningRefused as exc:
            logger.warning("credential provisioning refused: %s", exc.code)
            raise AgentError(
                exc.message,
                status=exc.status,
                type="permission_error" if exc.status == 403 else "invalid_request_error",
                code=exc.code,
            ) from None
        return ORJSONResponse(result)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        Route("/attestation", attestation, methods=["POST"]),
        Route("/credentials", provision_credential, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            AgentError: _agent_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.config = config
    app.state.metrics = metrics
    app.state.attestation = provider
    app.state.credentials = credentials
    # Added first, so it runs inside _Observe: refusals get a request id and are counted.
    app.add_middleware(_RequireCredential, credentials=credentials, metrics=metrics)
    app.add_middleware(_Observe, metrics=metrics, paths={r.path for r in routes})
    return app


def _pick(table: Mapping[str, Any], model: str, endpoint: str, request: Request) -> Any:
    runtime = table.get(model)
    if runtime is None:
        raise model_not_found(model, endpoint=endpoint)
    request.state.model = model
    return runtime


async def _json(request: Request) -> Any:
    body = await request.body()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_request("The request body is not valid JSON.") from None


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _stream_flag(form: Any) -> bool:
    value = (_field(form, "stream") or "false").lower()
    if value not in ("true", "false"):
        raise invalid_request("'stream' must be true or false.", param="stream")
    return value == "true"


def _audio_options(form: Any, task: str) -> tuple[TranscriptionOptions, str]:
    response_format = _field(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise invalid_request(
            f"Unsupported response_format '{response_format}'; use one of "
            f"{', '.join(RESPONSE_FORMATS)}.",
            param="response_format",
        )
    temperature = 0.0
    if (raw := _field(form, "temperature")) is not None:
        try:
            temperature = float(raw)
        except ValueError:
            temperature = -1.0
        if not 0.0 <= temperature <= 1.0:
            raise invalid_request(
                "'temperature' must be a number between 0 and 1.", param="temperature"
            )
    granularities = [g for g in form.getlist("timestamp_granularities[]") if isinstance(g, str)]
    if any(g not in ("word", "segment") for g in granularities):
        raise invalid_request(
            "'timestamp_granularities[]' items must be 'word' or 'segment'.",
            param="timestamp_granularities[]",
        )
    if granularities and response_format != "verbose_json":
        raise invalid_request(
            "'timestamp_granularities[]' requires response_format 'verbose_json'.",
            param="timestamp_granularities[]",
        )
    language = _field(form, "language")
    options = TranscriptionOptions(
        task="transcribe" if task == "transcribe" else "translate",
        language=language.lower() if language else None,
        prompt=_field(form, "prompt"),
        temperature=temperature,
        word_timestamps="word" in granularities,
    )
    return options, response_format


def _model_object(runtimes: Runtimes, model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": runtimes.created,
        "owned_by": runtimes.owned_by[model_id],
    }


def _event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _has_content(chunk: dict) -> bool:
    for choice in chunk.get("choices") or ():
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


async def _agent_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentError)  # noqa: S101  (registered for AgentError only)
    return ORJSONResponse(exc.envelope(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101  (registered for HTTPException only)
    if exc.status_code == 404:
        error = AgentError(
            f"Unknown endpoint {request.method} {request.url.path}.",
            status=404,
            type="not_found_error",
            code="unknown_url",
        )
    elif exc.status_code == 405:
        error = AgentError(
            f"Method {request.method} is not allowed on {request.url.path}.", status=405
        )
    else:
        error = AgentError(str(exc.detail), status=exc.status_code)
    return ORJSONResponse(error.envelope(), status_code=error.status, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Log where it failed, but no message or body: they may quote prompts or audio.
    logger.error("unhandled error on %s: %s", request.url.path, frames_of(exc))
    error = server_error("The agent failed to handle the request.")
    return ORJSONResponse(error.envelope(), status_code=error.status)


class _RequireCredential:
    """ASGI middleware: every path but ``OPEN_PATHS`` needs the platform's credential.

    A missing or wrong credential is a 401 in OpenAI's envelope, before any route (or a
    404 for an unknown one) is reached. The refusal is logged without what was presented.
    """

    def __init__(self, app: ASGIApp, *, credentials: CredentialStore, metrics: AgentMetrics):
        self.app = app
        self.credentials = credentials
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        if presented is not None and self.credentials.accepts(presented):
            await self.app(scope, receive, send)
            return
        reason = "no credential" if presented is None else "a wrong credential"
        client = (scope.get("client") or ("?", 0))[0]
        logger.warning(
            "refused %s %s from %s: %s", scope["method"], scope["path"][:100], client, reason
        )
        self.metrics.refused.inc()
        error = AgentError(
            "Missing or invalid credential: this agent serves only its Cube AI platform.",
            status=401,
            type="authentication_error",
            code="invalid_api_key",
        )
        response = ORJSONResponse(
            error.envelope(),
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="cube-ai-agent"'},
        )
        await response(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
            return None
    return None


class _Observe:
    """ASGI middleware: request ids, request counts and latencies (streams to their end)."""

    def __init__(self, app: ASGIApp, *, metrics: AgentMetrics, paths: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in self.paths else "other"
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            if endpoint not in ("/metrics", "/health", "other"):
                model = str((scope.get("state") or {}).get("model", ""))
                self.metrics.requests.labels(endpoint, model, str(status)).inc()
                self.metrics.latency.labels(endpoint, model).observe(time.perf_counter() - started)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            # Only a short token is echoed back, so a client cannot inject header content.
            text = value.decode("latin-1")
            return text if len(text) <= 128 and text.isprintable() else None
    return None
