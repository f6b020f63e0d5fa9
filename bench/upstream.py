"""A minimal, fast OpenAI-compatible upstream for the gateway benchmark (its own process).

`POST /v1/chat/completions` answers a fixed completion with usage; with `"stream": true` it
sends `--chunks` SSE chunks `--spacing-ms` apart, then a usage chunk and `data: [DONE]`
(chunked transfer encoding, keep-alive). For the model `bench-prose` it streams a sentence
of prose, one word per chunk as tokenizers cut it (" The", " capital"...), a word every
`--prose-spacing-ms`, as a model decodes: what the time to the first visible word is
measured on. `GET /v1/models` lists the one model. Anything else
is a 404. A raw asyncio protocol on uvloop when installed: no framework, nothing per request
but a small JSON parse, so that whatever sits in front of it is what gets measured.

    python bench/upstream.py --port 18001 --chunks 16 --spacing-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

MAX_HEADER = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}


PROSE_MODEL = "bench-prose"
PROSE = [
    "The",
    "capital",
    "of",
    "France",
    "is",
    "Paris,",
    "a",
    "city",
    "on",
    "the",
    "Seine",
    "with",
    "many",
    "museums",
    "and",
    "long",
    "avenues",
]


def completion_body(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        },
        separators=(",", ":"),
    ).encode()


def sse_events(model: str, chunks: int) -> list[bytes]:
    """The stream's events, each already framed as one HTTP chunk."""
    created = int(time.time())
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created}
    events = []
    words = [word if i == 0 else f" {word}" for i, word in enumerate(PROSE)]
    if model == PROSE_MODEL:
        chunks = len(words)
    for i in range(chunks):
        text = words[i] if model == PROSE_MODEL else ("tok " if i == 0 else f"tok{i} ")
        delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
        finish = "stop" if i == chunks - 1 else None
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        events.append({**base, "model": model, "choices": [choice]})
    events.append({**base, "model": model, "choices": [], "usage": USAGE})
    framed = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    framed.append(b"data: [DONE]\n\n")
    return [b"%x\r\n%s\r\n" % (len(data), data) for data in framed]


def head(status: str, content_type: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Connection: keep-alive"]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Upstream(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; requests on one connection are answered in order."""

    chunks = 16
    spacing = 0.0
    prose_spacing = 0.02
    _cache: dict[str, bytes] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""
        self.busy: asyncio.Task | None = None
        self.queue: list[tuple[str, str, bytes]] = []

    def connection_lost(self, exc) -> None:
        if self.busy is not None:
            self.busy.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER:
                    self.transport.close()
                return
            header = self.buffer[:end].decode("latin-1")
            request_line, *header_lines = header.split("\r\n")
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length > MAX_BODY:
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path = [*request_line.split(" "), "", ""][:2]
            self.queue.append((method, path, body))
            if self.busy is None:
                self.drain()

    def drain(self) -> None:
        while self.queue:
            method, path, body = self.queue.pop(0)
            streaming = self.answer(method, path, body)
            if streaming is not None:
                self.busy = asyncio.get_running_loop().create_task(self.stream(*streaming))
                return

    def answer(self, method: str, path: str, body: bytes):
        path = path.split("?", 1)[0]
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                self.reply("400 Bad Request", b'{"error":{"message":"bad json"}}')
                return None
            model = str(payload.get("model") or "bench-model")
            if payload.get("stream"):
                return (model,)
            cached = self._cache.get(model)
            if cached is None:
                cached = self._cache[model] = completion_body(model)
            self.reply("200 OK", cached)
        elif method == "GET" and path in ("/v1/models", "/models"):
            self.reply(
                "200 OK", b'{"object":"list","data":[{"id":"bench-model","object":"model"}]}'
            )
        else:
            self.reply("404 Not Found", b'{"error":{"message":"not found"}}')
        return None

    def reply(self, status: str, body: bytes) -> None:
        self.transport.write(head(status, "application/json", len(body)) + body)

    async def stream(self, model: str) -> None:
        events = sse_events(model, self.chunks)
        spacing = self.prose_spacing if model == PROSE_MODEL else self.spacing
        content_events = len(events) - 2
        self.transport.write(head("200 OK", "text/event-stream", None))
        for i, event in enumerate(events):
            if spacing and 0 < i <= content_events:
                await asyncio.sleep(spacing)
            self.transport.write(event)
        self.transport.write(b"0\r\n\r\n")
        self.busy = None
        self.drain()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=2048, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"upstream listening on http://{host}:{port}/v1", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per stream")
    parser.add_argument("--spacing-ms", type=float, default=0.0, help="pause between chunks")
    parser.add_argument(
        "--prose-spacing-ms", type=float, default=20.0, help="pause between bench-prose words"
    )
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the bench upstream listens on loopback only")
    Upstream.chunks = max(1, args.chunks)
    Upstream.spacing = max(0.0, args.spacing_ms) / 1000
    Upstream.prose_spacing = max(0.0, args.prose_spacing_ms) / 1000
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
