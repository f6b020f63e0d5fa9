"""The browser chat's WebSocket consumer: `ws/domains/<domain-id>/chat/`.

A signed-in member of the domain with the `chat` permission sends a conversation (the
browser keeps it; nothing of it is stored here) and receives the reply token by token. The
consumer turns frames into a session `Caller` and validated parameters, calls
`inference.pipeline.chat` (rate limits, routing, guardrails with the streaming sanitizer,
metering: all of it the pipeline's, as for the API), and shapes what comes back as frames.

Membership and the `chat` permission are read afresh (`membership_rights`, as for the pages
and the API) when the socket opens and on every `chat` frame: a removed member or a
withdrawn permission gets an error frame and the socket closes. Each reply runs in a task of
its own, so a `stop` frame is read while it streams; stopping cancels the task, which
closes the pipeline's stream and with it the upstream request. Chunks wait for the browser
in a bounded queue (`CUBEAI_CHAT_BUFFER_CHUNKS`): a browser that reads slower than the model
writes gets the reply stopped (`slow_client`), never an upstream held open for it. See the
README ("The chat page") for the frames.
"""

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cubeai import jsonbody
from cubeai.api import EXPECTED, JSON_TYPES
from cubeai.exceptions import DomainError, NotFound, PermissionDenied
from domains import permissions
from inference import pipeline
from inference.context import Caller, session_caller
from inference.errors import InferenceError

log = logging.getLogger(__name__)

REPLY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Close codes: the HTTP status of the refusal, in the range left to applications.
CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN = 4403


class _Frame(BaseModel):
    # Strict, as the HTTP API is: "max_tokens": "5" is the wrong type, not a 5.
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatMessage(_Frame):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=200_000)]


class ChatFrame(_Frame):
    """Send the conversation so far; the model answers the last message."""

    type: Literal["chat"]
    id: Annotated[str, Field(pattern=REPLY_ID.pattern)]
    model: Annotated[str, Field(min_length=1, max_length=200)]
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=500)]
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None

    def params(self) -> dict[str, Any]:
        """The chat completion request for the pipeline: always a stream, with usage."""
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [message.model_dump() for message in self.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        return params


class StopFrame(_Frame):
    """Stop the reply `id` (cancels its upstream request)."""

    type: Literal["stop"]
    id: Annotated[str, Field(pattern=REPLY_ID.pattern)]


FRAMES = {"chat": ChatFrame, "stop": StopFrame}


class SlowClient(Exception):
    """The browser fell more than the buffer behind the model."""


@dataclass(slots=True)
class Figures:
    """What the page shows under a reply: timings and token counts (never the text)."""

    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    last_token: float | None = None
    tokens: int = 0
    usage: dict = field(default_factory=dict)

    def token(self) -> None:
        self.last_token = time.perf_counter()
        if self.first_token is None:
            self.first_token = self.last_token
        self.tokens += 1

    def as_dict(self) -> dict[str, Any]:
        now = time.perf_counter()
        completion = int(self.usage.get("completion_tokens") or self.tokens)
        # The rate of generation: the tokens after the first over the time they took.
        generating = (self.last_token or 0.0) - (self.first_token or 0.0)
        rate = (completion - 1) / generating if completion > 1 and generating > 0 else None
        return {
            "ttft_ms": round((self.first_token - self.started) * 1000, 1)
            if self.first_token is not None
            else None,
            "duration_ms": round((now - self.started) * 1000, 1),
            "tokens_per_second": round(rate, 1) if rate is not None else None,
            "prompt_tokens": self.usage.get("prompt_tokens"),
            "completion_tokens": completion,
        }


def error_frame(error: DomainError, reply_id: str | None = None) -> dict[str, Any]:
    """An error as a frame: OpenAI's error fields, the status, and for a guardrail block the
    rules that fired (never the text that fired them)."""
    frame = {
        "type": "error",
        "id": reply_id,
        "status": error.status,
        "code": error.code,
        "message": error.message,
        "param": error.param,
    }
    if isinstance(error, InferenceError):
        frame.update(error.extra)
        if "Retry-After" in error.headers:
            frame["retry_after"] = int(error.headers["Retry-After"])
    return frame


def _bad_frame(message: str, *, code: str = "invalid_frame", param: str | None = None) -> dict:
    return {
        "type": "error",
        "id": None,
        "status": 400,
        "code": code,
        "message": message,
        "param": param,
    }


def _validation_message(exc: ValidationError) -> tuple[str, str | None, str]:
    """The message, parameter and code of a frame's first error, a wrong type worded as the
    HTTP API words it (`invalid_type`)."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return f"Unrecognized field: {param}", param, "invalid_frame"
    if first["type"] in EXPECTED:
        got = JSON_TYPES.get(type(first.get("input")), "another type")
        expected = EXPECTED[first["type"]]
        message = f"Invalid type for '{param}': expected {expected}, but got {got} instead."
        return message, param, "invalid_type"
    return f"`{param}`: {first['msg']}", param, "invalid_frame"


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One browser tab's chat in one domain; one reply at a time."""

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        # The API's parser: a frame nested deeper than `CUBEAI_MAX_JSON_DEPTH` is refused
        # here, as a body is, before anything re-encodes it for the backend.
        return jsonbody.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return orjson.dumps(content).decode()

    async def connect(self) -> None:
        self.domain_id = str(self.scope["url_route"]["kwargs"]["domain_id"])
        self.reply: asyncio.Task | None = None
        self.reply_id: str | None = None
        # `stopping`: a stop frame cancelled the reply; `stoppable`: its stream still runs.
        self.stopping = False
        self.stoppable = False
        try:
            await self._caller()
        except NotFound:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        except PermissionDenied:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()

    async def disconnect(self, code: int) -> None:
        # The browser left: stop its reply and the upstream request with it.
        if self.reply is not None and not self.reply.done():
            self.reply.cancel()
            await asyncio.gather(self.reply, return_exceptions=True)

    async def _caller(self) -> Caller:
        caller = await session_caller(self.scope.get("user"), self.domain_id)
        caller.require(permissions.CHAT)
        return caller

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        """Every frame is one JSON object; anything else is answered with an error frame
        and the socket stays open."""
        if text_data is None:
            return await self.send_json(_bad_frame("Send JSON text frames, not binary."))
        if len(text_data) > settings.CUBEAI_MAX_JSON_BYTES:
            return await self.send_json(
                _bad_frame("The frame is too large.", code="request_too_large")
            )
        try:
            content = await self.decode_json(text_data)
        except jsonbody.JSONBodyError as exc:
            return await self.send_json(_bad_frame(str(exc), code="invalid_json"))
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs) -> None:
        if not isinstance(content, dict):
            return await self.send_json(_bad_frame("A frame is a JSON object."))
        # Only a string can name a frame: a list or object there is unhashable, and would
        # raise in the lookup and close the socket instead of answering.
        kind = content.get("type")
        frame_type = FRAMES.get(kind) if isinstance(kind, str) else None
        if frame_type is None:
            return await self.send_json(
                _bad_frame("`type` must be `chat` or `stop`.", param="type")
            )
        try:
            frame = frame_type.model_validate(content)
        except ValidationError as exc:
            message, param, code = _validation_message(exc)
            return await self.send_json(_bad_frame(message, param=param, code=code))
        if isinstance(frame, StopFrame):
            return await self._stop(frame.id)
        await self._chat(frame)

    async def _stop(self, reply_id: str) -> None:
        if self.reply is None or self.reply.done() or reply_id != self.reply_id:
            return await self.send_json(
                {**_bad_frame("No such reply is running.", code="not_running"), "id": reply_id}
            )
        if not self.stoppable:
            # Already stopping, or the stream is over and what it produced is going out: the
            # reply's closing frame answers this stop too. Cancelling now would lose it.
            return
        self.stopping, self.stoppable = True, False
        self.reply.cancel()

    async def _chat(self, frame: ChatFrame) -> None:
        if self.reply is not None and not self.reply.done():
            return await self.send_json(
                {
                    **_bad_frame("A reply is still running; stop it first.", code="busy"),
                    "id": frame.id,
                }
            )
        try:
            caller = await self._caller()
        except DomainError as error:
            # The membership or the permission went away: say so, then close.
            await self.send_json(error_frame(error, frame.id))
            code = CLOSE_NOT_FOUND if isinstance(error, NotFound) else CLOSE_FORBIDDEN
            return await self.close(code=code)
        self.reply_id, self.stopping, self.stoppable = frame.id, False, True
        self.reply = asyncio.get_running_loop().create_task(
            self._reply(caller, frame.id, frame.params())
        )

    async def _reply(self, caller: Caller, reply_id: str, params: dict) -> None:
        """Run one reply: tokens through the bounded queue, then exactly one closing frame
        (`end`, `stopped` or `error`).

        A stop cancels the stream only. Once the stream is over, what it produced (the tokens
        still buffered for a slow browser) and the closing frame go out whatever arrives: a
        stop cancelling those awaits would lose the closing frame and leave the page waiting.
        """
        figures = Figures()
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, settings.CUBEAI_CHAT_BUFFER_CHUNKS))
        sender = asyncio.get_running_loop().create_task(self._send_queued(queue))
        try:
            try:
                last = await self._stream(caller, reply_id, params, queue, figures)
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
                last = {"type": "stopped", "id": reply_id, **figures.as_dict()}
            except DomainError as error:
                last = error_frame(error, reply_id)
            except SlowClient:
                last = {
                    **_bad_frame(
                        "The browser fell too far behind the model; the reply was stopped.",
                        code="slow_client",
                    ),
                    "id": reply_id,
                    "status": 503,
                }
            except Exception:
                log.exception("chat reply failed")
                last = {
                    **_bad_frame("The reply failed.", code="server_error"),
                    "id": reply_id,
                    "status": 500,
                }
            finally:
                self.stoppable = False
            await queue.put(None)
            await sender
            await self.send_json(last)
        finally:
            # Only the socket closing (`disconnect`) cancels this far: end the sender with
            # the reply, or it would wait on its queue for as long as the socket lives.
            if not sender.done():
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def _send_queued(self, queue: asyncio.Queue) -> None:
        while (frame := await queue.get()) is not None:
            await self.send_json(frame)

    async def _stream(
        self,
        caller: Caller,
        reply_id: str,
        params: dict,
        queue: asyncio.Queue,
        figures: Figures,
    ) -> dict:
        def put(frame: dict) -> None:
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                raise SlowClient() from None

        request_id = f"req_{uuid.uuid4().hex}"
        stream = await pipeline.chat(caller, params, request_id=request_id)
        finish_reason = None
        try:
            target = stream.call.target
            masked = stream.call.headers.get("x-guardrails-masked", "")
            put(
                {
                    "type": "start",
                    "id": reply_id,
                    "request_id": request_id,
                    "model": stream.call.model,
                    "backend": target.name if target else None,
                    "tee": target.tee_type if target else None,
                    "attestation": target.attestation if target else None,
                    "confidential": bool(target) and target.tee_type != "none",
                    "masked": [rail for rail in masked.split(",") if rail],
                }
            )
            async for chunk in stream:
                if isinstance(chunk.get("usage"), dict):
                    figures.usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        figures.token()
                        put({"type": "token", "id": reply_id, "text": text})
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
        finally:
            await stream.aclose()
        return {"type": "end", "id": reply_id, "finish_reason": finish_reason, **figures.as_dict()}
