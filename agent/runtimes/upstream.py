"""Relay to a model runtime in the same confidential VM (vLLM, Ollama) over its OpenAI API.

This is how a production agent fronts a GPU model: requests are validated by the agent as
for the built-in models, then forwarded over a pooled aiohttp session; streams are relayed
chunk by chunk as they arrive, never buffered whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import orjson

from agent.errors import AgentError, server_error
from agent.runtimes import Embeddings, TextEndpoint

_PATHS = {"chat": "/chat/completions", "completions": "/completions"}


class UpstreamClient:
    """One pooled HTTP session to the upstream runtime, shared by its models."""

    def __init__(self, base_url: str, *, timeout_s: float, api_key: str | None = None) -> None:
        base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Accept both "http://host:8000" and "http://host:8000/v1", as OpenAI clients do.
        self.base_url = base if base.endswith("/v1") else f"{base}/v1"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def session(self) -> aiohttp.ClientSession:
        # The session must be created inside the running event loop, so it is made lazily.
        async with self._lock:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(
                    timeout=self._timeout,
                    headers=self._headers,
                    json_serialize=lambda obj: orjson.dumps(obj).decode(),
                )
            return self._session

    async def post(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        session = await self.session()
        try:
            response = await session.post(f"{self.base_url}{path}", json=body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise server_error(
                f"The upstream model runtime is unreachable: {type(exc).__name__}",
                status=502,
                code="upstream_unavailable",
            ) from exc
        if response.status >= 400:
            raise await _upstream_error(response)
        return response

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class UpstreamRuntime:
    """A model served by the upstream runtime under a public id of the agent's choosing."""

    def __init__(self, model_id: str, remote_id: str, client: UpstreamClient) -> None:
        self.model_id = model_id
        self.remote_id = remote_id
        # Unknown until the first answer; only used for reporting.
        self.dimensions = 0
        self._client = client

    async def generate(self, endpoint: TextEndpoint, request: dict[str, Any]) -> dict[str, Any]:
        body = {**request, "model": self.remote_id, "stream": False}
        async with await self._client.post(_PATHS[endpoint], body) as response:
            payload = await response.json(loads=orjson.loads, content_type=None)
        payload["model"] = self.model_id
        return payload

    async def stream(self, endpoint: TextEndpoint, request: dict[str, Any]) -> AsyncIterator[dict]:
        body = {**request, "model": self.remote_id, "stream": True}
        async with await self._client.post(_PATHS[endpoint], body) as response:
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                chunk = orjson.loads(data)
                if "error" in chunk:
                    error = chunk["error"] or {}
                    raise server_error(str(error.get("message", "upstream error")), status=502)
                chunk["model"] = self.model_id
                yield chunk

    async def embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        body = {"model": self.remote_id, "input": inputs, "encoding_format": "float"}
        async with await self._client.post("/embeddings", body) as response:
            payload = await response.json(loads=orjson.loads, content_type=None)
        rows = sorted(payload["data"], key=lambda item: item["index"])
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        self.dimensions = int(vectors.shape[1]) if vectors.size else self.dimensions
        usage = payload.get("usage") or {}
        return Embeddings(vectors=vectors, prompt_tokens=int(usage.get("prompt_tokens", 0)))

    async def aclose(self) -> None:
        # The shared client is closed once by whoever built it.
        return None


async def _upstream_error(response: aiohttp.ClientResponse) -> AgentError:
    try:
        payload = await response.json(loads=orjson.loads, content_type=None)
        error = payload.get("error") if isinstance(payload, dict) else None
    except (ValueError, aiohttp.ContentTypeError):
        error = None
    finally:
        response.release()
    if isinstance(error, dict):
        message = str(error.get("message") or "upstream error")
        param, code = error.get("param"), error.get("code")
    else:
        message, param, code = (str(error) if error else "upstream error"), None, None
    if 400 <= response.status < 500:
        return AgentError(
            message,
            status=response.status,
            type="not_found_error" if response.status == 404 else "invalid_request_error",
            param=param if isinstance(param, str) else None,
            code=code if isinstance(code, str) else None,
        )
    return server_error(
        f"The upstream model runtime failed: {message}", status=502, code="upstream_error"
    )
