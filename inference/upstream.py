"""Forwarding to backends over one pooled aiohttp client per process, with failover.

A request goes to the first routable deployment; when the backend could not accept it (the
connection failed, or it answered 502/503) it is retried once on another deployment of the
same model, never after the backend began the work (`open_response`). Timeouts: connecting
(`CUBEAI_UPSTREAM_CONNECT_TIMEOUT`), a whole answer (`CUBEAI_UPSTREAM_TOTAL_TIMEOUT`), a
stream's first chunk (`CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT`) and the gaps between its chunks
(`CUBEAI_UPSTREAM_IDLE_TIMEOUT`). Backend faults feed the circuit breaker, which takes a
failing backend out of routing in this process at once; the background health check does
the same for every process.

An https backend with an attested key (`pinned_key_sha256`) is reached only if its TLS
certificate carries that key: see `SpkiPin`.
"""

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aiohttp
from django.conf import settings

from cubeai import metrics
from inference.attestation import spki_of_certificate
from inference.errors import (
    ContextLengthExceeded,
    InferenceError,
    NoBackend,
    UpstreamFailed,
    UpstreamTimeout,
)
from inference.registry import Target, registry

if TYPE_CHECKING:
    from inference.pipeline import Call

BodyFor = Callable[[str], bytes | aiohttp.FormData]

log = logging.getLogger(__name__)

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

RETRYABLE_STATUS = frozenset({502, 503})
# The longest line of a backend's event stream held while it arrives.
MAX_LINE_BYTES = 1024 * 1024


class SpkiPin(aiohttp.Fingerprint):
    """Pin the SHA-256 of the server certificate's SubjectPublicKeyInfo (the attested key).

    aiohttp's own `Fingerprint` pins the whole certificate's DER; the attestation binds the
    key. Passed as `ssl=`, a `Fingerprint` makes aiohttp handshake without CA verification
    (agents use self-signed certificates; trust comes from attestation) and call `check()`
    on the new connection before any byte of the request is sent. A mismatch raises
    `ServerFingerprintMismatch`, a connection error, so the request fails over.
    """

    def check(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        got = b""
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True) or b""
            try:
                spki = spki_of_certificate(der)
                got = hashlib.sha256(spki).digest()
            except ValueError:
                pass
        if not hmac.compare_digest(got, self.fingerprint):
            host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
            raise aiohttp.ServerFingerprintMismatch(self.fingerprint, got, host, port)


# One pin object per key: pooled connections are keyed by it, so a connection made under
# one pin is never reused under another.
_pins: dict[str, SpkiPin] = {}
_reattest_asked: dict[int, float] = {}


def ssl_for(target: Target) -> SpkiPin | bool:
    """`ssl=` for a target: its key pin if it has one and speaks https, else CA checks."""
    if not (target.pinned_key_sha256 and target.base_url.startswith("https://")):
        return True
    pin = _pins.get(target.pinned_key_sha256)
    if pin is None:
        pin = _pins[target.pinned_key_sha256] = SpkiPin(bytes.fromhex(target.pinned_key_sha256))
    return pin


def _reattest_soon(target: Target) -> None:
    """Ask a worker to re-attest a backend whose key no longer matches (once a minute)."""
    now = time.monotonic()
    if _reattest_asked.get(target.id, -60.0) > now - 60:
        return
    _reattest_asked[target.id] = now

    def send() -> None:
        from inference.tasks import attest_backend

        try:
            attest_backend.delay(target.id, "key-change")
        except Exception:
            log.exception("could not queue the re-attestation of %s", target.name)

    asyncio.get_running_loop().run_in_executor(None, send)


def session() -> aiohttp.ClientSession:
    """The process's pooled client for the running event loop."""
    loop = asyncio.get_running_loop()
    client = _sessions.get(loop)
    if client is None or client.closed:
        connector = aiohttp.TCPConnector(
            limit=settings.CUBEAI_UPSTREAM_MAX_CONNECTIONS,
            keepalive_timeout=30,
            ttl_dns_cache=300,
        )
        client = aiohttp.ClientSession(
            connector=connector,
            timeout=timeouts(stream=False),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        # Drop sessions of closed loops (tests run one loop per test).
        for old_loop in [lp for lp in _sessions if lp.is_closed()]:
            del _sessions[old_loop]
        _sessions[loop] = client
    return client


async def session_close() -> None:
    """Close the running loop's pooled client: for callers that run a loop of their own per
    job (a Celery task, a test), whose loop ends afterwards."""
    client = _sessions.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.close()


def _headers(target: Target, request_id: str, content_type: str | None) -> dict[str, str]:
    headers = {"x-request-id": request_id}
    if content_type:
        headers["Content-Type"] = content_type
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    return headers


# Failures before the backend could accept the work: nothing was sent, the connection was
# refused, or it was not made within the connect timeout (aiohttp raises
# `ConnectionTimeoutError` for that, which is not a `ClientConnectorError`); the request may
# safely run elsewhere.
NOT_ACCEPTED = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ServerFingerprintMismatch,
)


def timeouts(*, stream: bool) -> aiohttp.ClientTimeout:
    """A request's timeouts: connecting always; for a whole answer, its total (the backend
    may think in silence until it is done); for a stream, none here: its first byte and the
    gaps between chunks are bounded by the reader (`first_byte_timeout`, `idle_timeout`)."""
    connect = settings.CUBEAI_UPSTREAM_CONNECT_TIMEOUT
    if stream:
        return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=None)
    return aiohttp.ClientTimeout(
        total=settings.CUBEAI_UPSTREAM_TOTAL_TIMEOUT, sock_connect=connect, sock_read=None
    )


async def open_response(
    candidates: list[tuple[Target, str]],
    path: str,
    *,
    request_id: str,
    body_for: BodyFor,
    content_type: str | None = "application/json",
    stream: bool = False,
    first_byte_by: float | None = None,
) -> tuple[Target, str, aiohttp.ClientResponse]:
    """Send the request; returns the backend, the model name it was asked for, and its open
    response. The caller must release the response.

    It fails over once, to another deployment, only while the backend has not accepted the
    work: a connection that could not be made (refused, unreachable, not made within the
    connect timeout, the wrong attested key) or a 502/503 answer. Once the request was sent, a timeout or a broken connection is a
    504/502 for the client: the generation may be running, and running it again elsewhere
    would do (and bill) the work twice. The breaker counts backend faults only: connection
    errors, timeouts and 5xx answers, never a client's 4xx or a client that went away.

    `body_for(upstream_model)` builds the body for a deployment, since deployments may name
    the model differently. A stream's answer must begin (its headers) by `first_byte_by`
    (the event loop's clock; by default `CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT` from now),
    failover included.
    """
    last_error = "no backend available"
    if stream and first_byte_by is None:
        first_byte_by = (
            asyncio.get_running_loop().time() + settings.CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT
        )
    tried: Target | None = None
    for attempt, (target, upstream_model) in enumerate(candidates[:2]):
        if not registry.started(target.id):
            continue  # a half-open breaker whose one probe is already out
        tried = target
        began = time.monotonic()
        try:
            async with asyncio.timeout_at(first_byte_by if stream else None):
                response = await session().post(
                    f"{target.base_url}/{path}",
                    data=body_for(upstream_model),
                    headers=_headers(target, request_id, content_type),
                    ssl=ssl_for(target),
                    allow_redirects=False,
                    timeout=timeouts(stream=stream),
                )
        except NOT_ACCEPTED as exc:
            registry.finished(target.id)
            breaker_failure(target)
            last_error = type(exc).__name__
            log.warning("backend %s could not be reached: %s", target.name, last_error)
            if isinstance(exc, aiohttp.ServerFingerprintMismatch):
                _reattest_soon(target)
            continue
        except (aiohttp.ClientError, TimeoutError) as exc:
            registry.finished(target.id)
            breaker_failure(target)
            log.warning("backend %s failed after the request: %s", target.name, type(exc).__name__)
            error = UpstreamTimeout() if isinstance(exc, TimeoutError) else UpstreamFailed()
            error.target = target
            raise error from None
        except BaseException:
            # The client went away (cancelled): not the backend's fault.
            registry.finished(target.id)
            raise
        if response.status in RETRYABLE_STATUS and attempt + 1 < min(len(candidates), 2):
            registry.finished(target.id)
            breaker_failure(target)
            last_error = f"HTTP {response.status}"
            response.release()
            continue
        if response.status >= 500:
            breaker_failure(target)
        else:
            breaker_success(target)
        metrics.UPSTREAM_SECONDS.labels(target.name).observe(time.monotonic() - began)
        return target, upstream_model, response
    error = NoBackend(
        "No backend could serve this request right now; please retry.",
        extra={"detail": last_error} if settings.DEBUG else None,
    )
    error.target = tried
    raise error


def breaker_failure(target: Target) -> None:
    """Count a backend fault against its breaker, and publish the breaker's state."""
    breaker = registry.breaker(target.id)
    breaker.failure(time.monotonic())
    _breaker_state(target, breaker)


def breaker_success(target: Target) -> None:
    """An answer from the backend: its breaker closes; publish that."""
    breaker = registry.breaker(target.id)
    breaker.success()
    _breaker_state(target, breaker)


def _breaker_state(target: Target, breaker) -> None:
    # 1 from the moment it trips until an answer closes it again (open or half-open).
    metrics.BREAKER_OPEN.labels(target.name).set(0 if breaker.state == "closed" else 1)


def done(target: Target | None) -> None:
    """Mark one in-flight request to this backend finished."""
    if target is not None:
        registry.finished(target.id)


@asynccontextmanager
async def exchange(
    call: "Call",
    candidates: list[tuple[Target, str]],
    body_for: BodyFor,
    content_type: str | None = "application/json",
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A backend's answer that is not an error (an error is raised, normalised), released
    and counted done afterwards; `call.target` is the backend that answered."""
    began = time.perf_counter()
    target, call.upstream_model, response = await open_response(
        candidates,
        call.endpoint.path,
        request_id=call.request_id,
        body_for=body_for,
        content_type=content_type,
    )
    call.upstream_ms = (time.perf_counter() - began) * 1000
    call.target = target
    try:
        if response.status >= 300:
            raise await normalised_error(response)
        yield response
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Reading the answer failed or ran past the total timeout: the backend's fault.
        breaker_failure(target)
        raise (UpstreamTimeout() if isinstance(exc, TimeoutError) else UpstreamFailed()) from None
    finally:
        response.release()
        done(target)


async def line_batches(
    response: aiohttp.ClientResponse, *, first_byte_by: float | None = None
) -> AsyncIterator[list[bytes]]:
    """A stream's lines, in batches: the complete lines that had arrived by each read, so
    that what a backend sent together is relayed together (one write to the client instead
    of one per event, as a proxy that forwards what it read). The first line is due by
    `first_byte_by` (the event loop's clock: the deadline the request was opened under, so
    that the headers and the first chunk share one `CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT`; that
    timeout from now without one), each next one within `CUBEAI_UPSTREAM_IDLE_TIMEOUT`: a
    backend that trickles bytes without ending a line times out. A TimeoutError otherwise;
    a ClientPayloadError for a line longer than `MAX_LINE_BYTES`. The last line may lack
    its end."""
    loop = asyncio.get_running_loop()
    deadline = first_byte_by
    if deadline is None:
        deadline = loop.time() + settings.CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT
    # The unfinished last line (a bytearray: a long line arriving in many reads is not
    # copied again at each one).
    partial = bytearray()
    while True:
        async with asyncio.timeout_at(deadline):
            data = await response.content.readany()
        if not data:
            if partial:
                yield [bytes(partial)]
            return
        end = data.rfind(b"\n")
        if end < 0:
            partial += data
            lines = []
        else:
            lines = (bytes(partial) + data[:end]).split(b"\n")
            partial = bytearray(data[end + 1 :])
        if len(partial) > MAX_LINE_BYTES:
            raise aiohttp.ClientPayloadError("a line of the backend's stream is too long")
        if lines:
            yield lines
            deadline = loop.time() + settings.CUBEAI_UPSTREAM_IDLE_TIMEOUT


async def open_stream(
    call: "Call", candidates: list[tuple[Target, str]], body_for: BodyFor
) -> aiohttp.ClientResponse:
    """A backend's event stream, open; the caller releases it and calls `done`, and reads
    it with `line_batches(response, first_byte_by=call.first_byte_by)`: the first chunk is due
    `CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT` after the request was sent, not after its headers."""
    began = time.perf_counter()
    call.first_byte_by = (
        asyncio.get_running_loop().time() + settings.CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT
    )
    target, call.upstream_model, response = await open_response(
        candidates,
        call.endpoint.path,
        request_id=call.request_id,
        body_for=body_for,
        stream=True,
        first_byte_by=call.first_byte_by,
    )
    call.upstream_ms = (time.perf_counter() - began) * 1000
    call.target = target
    if response.status >= 300:
        try:
            raise await normalised_error(response)
        finally:
            response.release()
            done(target)
    return response


# Backends whose `/tokenize` did not answer, and until when not to ask them again.
_no_tokenize: dict[int, float] = {}


async def count_prompt_tokens(target: Target, upstream_model: str, body: dict) -> int | None:
    """The prompt's tokens as the backend counts them (vLLM's `POST /tokenize`, given the
    request's `messages` or `prompt`), or None when it cannot say; asked at most once in
    ten minutes of a backend that could not."""
    now = time.monotonic()
    if _no_tokenize.get(target.id, 0) > now:
        return None
    root = target.base_url.removesuffix("/v1")
    try:
        async with session().post(
            f"{root}/tokenize",
            json={**body, "model": upstream_model},
            headers=_headers(target, "", None),
            ssl=ssl_for(target),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=settings.CUBEAI_UPSTREAM_CONNECT_TIMEOUT),
        ) as response:
            if response.status == 200:
                count = (await response.json(content_type=None)).get("count")
                if isinstance(count, int) and count >= 0:
                    return count
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
        pass
    _no_tokenize[target.id] = now + 600
    return None


# How backends word a prompt too long for the model's context (vLLM, llama.cpp, Ollama).
_CONTEXT_OVERFLOW = ("maximum context length", "context length", "context size", "context window")


async def normalised_error(response: aiohttp.ClientResponse) -> InferenceError:
    """An upstream error response, in OpenAI's envelope with the upstream's message if any.

    Its body is read within `CUBEAI_UPSTREAM_IDLE_TIMEOUT`: a stream's request has no total
    timeout, and a backend that sent error headers and then stalled would hold it forever.
    """
    message, param, code = f"The backend answered HTTP {response.status}.", None, None
    try:
        async with asyncio.timeout(settings.CUBEAI_UPSTREAM_IDLE_TIMEOUT):
            body = await response.json(content_type=None)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)[:1000]
            param = error.get("param") if isinstance(error.get("param"), str) else None
            code = error.get("code") if isinstance(error.get("code"), str) else None
        elif isinstance(error, str):
            message = error[:1000]
    except (ValueError, aiohttp.ClientError, TimeoutError):
        pass
    status = response.status
    if status >= 500 or status < 400:
        # Upstream internals (or a redirect, which a backend must not answer) are not the
        # client's business.
        return UpstreamFailed()
    if status not in (400, 401, 403, 404, 409, 413, 415, 422, 429):
        status = 400
    if status in (401, 403):
        # The backend rejected *our* credentials: a gateway fault, not the client's.
        return UpstreamFailed("The backend refused the gateway's credentials.")
    if code == "context_length_exceeded" or (
        status == 400 and any(words in message.lower() for words in _CONTEXT_OVERFLOW)
    ):
        return ContextLengthExceeded(message, param=param or "messages")
    return InferenceError(message, status=status, param=param, code=code)
