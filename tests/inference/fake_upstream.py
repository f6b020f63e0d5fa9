"""A controllable fake OpenAI-compatible upstream, for faults the real agent cannot produce.

FAKE: it stands in for a backend only to inject faults on demand (a 500, a slow first byte,
a stream cut in the middle, chunks at a fixed pace, a 503), and to play a guard model and a
model that leaks a secret across chunks (`guard`, `leak`). Every behaviour is chosen by the
upstream model name the gateway sends. `GET /stats` reports what it saw, so tests can check
that the gateway cancelled an upstream stream when its client went away.

Run: python fake_upstream.py PORT
"""

import asyncio
import json
import sys
import time

from aiohttp import web

stats = {"requests": 0, "streams_started": 0, "streams_cancelled": 0, "streams_finished": 0}


def _completion(model: str, text: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def _chunk(model: str, text: str | None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    stats["requests"] += 1
    body = await request.json()
    model = body["model"]
    echo = json.dumps(body["messages"])
    if model == "fault-500":
        return web.json_response({"error": {"message": "internal boom"}}, status=500)
    if model == "fault-503":
        return web.json_response({"error": {"message": "overloaded"}}, status=503)
    if model == "fault-slow":
        await asyncio.sleep(5)
    if model == "guard":
        return web.json_response(_completion(model, _guard_label(body["messages"])))
    if model == "leak" and body.get("stream"):
        return await _leak(request, model)
    if not body.get("stream"):
        return web.json_response(_completion(model, f"echo:{echo}"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    stats["streams_started"] += 1
    try:
        pieces = ["one ", "two ", "three ", "four ", "five "]
        for index, piece in enumerate(pieces):
            if model == "fault-cut" and index == 2:
                # Drop the connection mid-stream, without [DONE].
                request.transport.close()
                return response
            await response.write(_chunk(model, piece))
            if model in ("paced", "slow-stream"):
                await asyncio.sleep(0.1 if model == "paced" else 0.5)
        await response.write(_chunk(model, f" echo:{echo}"))
        await response.write(_chunk(model, None, "stop"))
        usage = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
        tail = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
        await response.write(
            b"data: " + json.dumps({**tail, "choices": [], "usage": usage}).encode() + b"\n\n"
        )
        await response.write(b"data: [DONE]\n\n")
        stats["streams_finished"] += 1
    except (ConnectionResetError, asyncio.CancelledError):
        stats["streams_cancelled"] += 1
        raise
    return response


def _guard_label(messages: list) -> str:
    """A stand-in safety classifier: "unsafe" when the text mentions "forbidden"."""
    text = " ".join(str(message.get("content")) for message in messages)
    return "unsafe" if "forbidden" in text.lower() else "safe"


# An AWS-style access key id and an email address, each split across several chunks.
LEAK_CHUNKS = [
    "Here are the credentials: AKIA",
    "IOSFODNN7",
    "EXAMPLE and the owner is jane.",
    "doe@exa",
    "mple.com; that",
    " is all.",
]


async def _leak(request: web.Request, model: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    stats["streams_started"] += 1
    for piece in LEAK_CHUNKS:
        await response.write(_chunk(model, piece))
    await response.write(_chunk(model, None, "stop"))
    await response.write(b"data: [DONE]\n\n")
    stats["streams_finished"] += 1
    return response


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(stats)


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", get_stats)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
