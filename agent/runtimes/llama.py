"""Chat and completions on llama.cpp through the prebuilt ``xllamacpp`` wheel.

``xllamacpp.Server`` is llama.cpp's own server loop with OpenAI-format dicts in and out. Its
handlers block the calling thread (without holding the GIL), so each request runs on a
worker thread of this runtime; ``n_parallel`` slots give continuous batching, so concurrent
requests share decode steps instead of queueing behind each other. The server also binds a
loopback port of its own; the agent never uses or exposes it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xllamacpp

from agent.errors import AgentError, invalid_request, server_error
from agent.runtimes import TextEndpoint

# SmolLM2-135M answers with garbage when the conversation has no system turn.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
_SYSTEM_ROLES = {"system", "developer"}
# Fields llama.cpp adds that are not part of OpenAI's response objects.
_NON_OPENAI_FIELDS = ("timings",)
_END = object()


class LlamaCppRuntime:
    """A GGUF model served by llama.cpp with continuous batching."""

    def __init__(
        self,
        model_id: str,
        gguf: Path,
        *,
        threads: int,
        parallel: int,
        context: int,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        self.model_id = model_id
        self.system_prompt = system_prompt
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf)
        params.n_parallel = parallel
        # The context is split evenly between the parallel slots.
        params.n_ctx = context
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        # Sleep rather than spin between decode steps: on a small shared machine spinning
        # threads starve the other runtimes (and each other) of the few cores there are.
        params.cpuparams.poll = 0
        params.cpuparams_batch.poll = 0
        # llama.cpp logs every prompt's timing at the default level; prompts stay private.
        params.verbosity = -1
        self.context_per_request = context // parallel
        self._server = xllamacpp.Server(params)
        # Requests beyond the slots wait inside llama.cpp, so allow a few more threads.
        self._executor = ThreadPoolExecutor(
            max_workers=parallel * 4, thread_name_prefix=f"llama-{model_id}"
        )

    async def generate(self, endpoint: TextEndpoint, request: dict[str, Any]) -> dict[str, Any]:
        body = self._prepare(endpoint, request)
        handler = self._handler(endpoint)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, handler, body)
        if result is None or "error" in result:
            raise _error_from(result, endpoint)
        return self._clean(result)

    async def stream(self, endpoint: TextEndpoint, request: dict[str, Any]) -> AsyncIterator[dict]:
        body = {**self._prepare(endpoint, request), "stream": True}
        handler = self._handler(endpoint)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk: dict) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            # Returning True tells llama.cpp to stop generating: the client went away.
            return cancelled.is_set()

        def run() -> None:
            try:
                result = handler(body, on_chunk)
                if isinstance(result, dict) and "error" in result:
                    loop.call_soon_threadsafe(queue.put_nowait, result)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        future = loop.run_in_executor(self._executor, run)
        try:
            while (chunk := await queue.get()) is not _END:
                if "error" in chunk:
                    raise _error_from(chunk, endpoint)
                yield self._clean(chunk)
        finally:
            cancelled.set()
            await asyncio.shield(future)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        # Dropping the server stops llama.cpp's loop and frees the weights.
        self._server = None

    def _handler(self, endpoint: TextEndpoint) -> Callable[..., Any]:
        if endpoint == "chat":
            return self._server.handle_chat_completions
        return self._server.handle_completions

    def _prepare(self, endpoint: TextEndpoint, request: dict[str, Any]) -> dict[str, Any]:
        body = dict(request)
        if endpoint == "chat":
            messages = [dict(m) for m in body["messages"]]
            for message in messages:
                # The model's chat template knows "system" but not OpenAI's newer "developer".
                if message.get("role") == "developer":
                    message["role"] = "system"
            if not any(m.get("role") in _SYSTEM_ROLES for m in request["messages"]):
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            body["messages"] = messages
        if body.get("max_completion_tokens") is not None:
            body["max_tokens"] = body.pop("max_completion_tokens")
        return body

    def _clean(self, payload: dict[str, Any]) -> dict[str, Any]:
        for name in _NON_OPENAI_FIELDS:
            payload.pop(name, None)
        # llama.cpp reports the GGUF path as the model; clients expect the public id.
        payload["model"] = self.model_id
        return payload


def _error_from(result: dict | None, endpoint: TextEndpoint) -> AgentError:
    error = (result or {}).get("error") or {}
    message = str(error.get("message") or "the model runtime failed")
    param = "messages" if endpoint == "chat" else "prompt"
    if error.get("type") == "exceed_context_size_error":
        return invalid_request(
            f"The input is too long for this model: {message}. Shorten the {param}.",
            param=param,
            code="context_length_exceeded",
        )
    if error.get("code") == 400 or error.get("type") == "invalid_request_error":
        return invalid_request(message, param=param)
    return server_error(message)
