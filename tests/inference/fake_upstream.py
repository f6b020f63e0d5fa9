"""A controllable fake OpenAI-compatible upstream, for what the real agent cannot produce.

FAKE: it stands in for a backend only to inject faults on demand (a 500, a 400, a slow answer
(`fault-slow`: 5 s, `fault-slow-2`: 2 s), error headers and then no body (`fault-500-stall`), a
stream whose headers and first chunk each take 1 s (`fault-late-start`),
a stream cut in the middle, chunks at a fixed pace, a 503), and to play what no real small
model can be made to produce on demand: a guard model (`guard`); a model that leaks a
secret across chunks (`leak`) or leaks personal data and secrets in every field of its
answer (`fields`: content, refusal, tool-call arguments, log probabilities); a 10 KB
private key (`pem`); a 100 KB answer with secrets near its end (`long`); and an echo of
what it received (`echo`, for chat, completions and embeddings; for transcriptions, the
uploaded WAV's length: the real agent's whisper is too slow for a load test on 2 cores), and
vLLM's `/tokenize` for `paced`. Every
behaviour is chosen
by the upstream model name the gateway sends. `GET /stats` reports what it saw (`last`: the
last request body per model), so tests can check what reached the backend and that the
gateway cancelled an upstream stream when its client went away.

Run: python fake_upstream.py PORT
"""

import asyncio
import io
import json
import sys
import time
import wave

from aiohttp import web

stats = {
    "requests": 0,
    "streams_started": 0,
    "streams_cancelled": 0,
    "streams_finished": 0,
    "chunks_sent": 0,
    "last": {},
}

SECRET = "AKIAIOSFODNN7EXAMPLE"
EMAIL = "jane.doe@example.com"
# What the `fields` model answers: personal data and a secret in every field of a choice.
FIELD_TEXT = f"Mail {EMAIL} with key {SECRET} now."
REFUSAL = f"I will not write to {EMAIL}."
ARGUMENTS = json.dumps({"to": EMAIL, "key": SECRET})
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    + "\n".join(f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC{i:013d}" for i in range(160))
    + "\n-----END PRIVATE KEY-----"
)
LONG = (
    "Plain words of a long answer, without anything to hide. " * 1800
    + f"At the very end: the key {SECRET}, write to {EMAIL}, and\n{PEM}\nThat is all."
)


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


def _event(body: dict) -> bytes:
    stats["chunks_sent"] += 1
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _chunk(model: str, text: str | None, finish: str | None = None, **fields) -> bytes:
    """A chat chunk; `fields` go into the delta, except `logprobs`, which goes on the choice."""
    logprobs = fields.pop("logprobs", None)
    delta = {"content": text} if text is not None else {}
    delta.update(fields)
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return _event(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
        }
    )


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _logprob(token: str) -> dict:
    encoded = list(token.encode())
    return {
        "token": token,
        "logprob": -0.5,
        "bytes": encoded,
        "top_logprobs": [{"token": token, "logprob": -0.5, "bytes": encoded}],
    }


async def _start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    stats["streams_started"] += 1
    return response


async def _finish(response: web.StreamResponse, model: str, finish: str = "stop") -> None:
    await response.write(_chunk(model, None, finish))
    await response.write(b"data: [DONE]\n\n")
    stats["streams_finished"] += 1


async def chat(request: web.Request) -> web.StreamResponse:
    stats["requests"] += 1
    body = await request.json()
    model = body["model"]
    stats["last"][model] = body
    echo = json.dumps(body["messages"])
    if model == "fault-500":
        return web.json_response({"error": {"message": "internal boom"}}, status=500)
    if model == "fault-503":
        return web.json_response({"error": {"message": "overloaded"}}, status=503)
    if model == "fault-400":
        return web.json_response({"error": {"message": "bad request"}}, status=400)
    if model == "fault-500-stall":
        # Error headers at once, then a body that never comes.
        response = web.StreamResponse(status=500, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"error": ')
        # Until the gateway gives up (a handler still sleeping would hold up shutdown).
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.1)
        return response
    if model == "fault-late-start":
        # The headers after 1 s, the first chunk 1 s after them: each within a 1.5 s wait,
        # together not.
        await asyncio.sleep(1)
        response = await _start(request)
        await asyncio.sleep(1)
        await response.write(_chunk(model, "late"))
        await _finish(response, model)
        return response
    if model == "fault-slow":
        await asyncio.sleep(5)
    if model == "fault-slow-2":
        await asyncio.sleep(2)
    if model == "guard":
        return web.json_response(_completion(model, _guard_label(body["messages"])))
    if model == "fields":
        if body.get("stream"):
            return await _fields_stream(request, model)
        return web.json_response(_fields_completion(model))
    if model in ("leak", "pem", "long") and body.get("stream"):
        return await _text_stream(request, model)
    if model in ("pem", "long"):
        return web.json_response(_completion(model, TEXTS[model]))
    if not body.get("stream"):
        return web.json_response(_completion(model, f"echo:{echo}"))
    response = await _start(request)
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
        await response.write(_event({**tail, "choices": [], "usage": usage}))
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
TEXTS = {
    "leak": "".join(LEAK_CHUNKS),
    "pem": f"Here is the key:\n{PEM}\nKeep it safe.",
    "long": LONG,
}


async def _text_stream(request: web.Request, model: str) -> web.StreamResponse:
    """A text in chunks of a few characters (`leak`: in its fixed chunks)."""
    response = await _start(request)
    pieces = LEAK_CHUNKS if model == "leak" else _pieces(TEXTS[model], 4)
    for piece in pieces:
        await response.write(_chunk(model, piece))
    await _finish(response, model)
    return response


def _fields_completion(model: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": FIELD_TEXT,
                    "refusal": REFUSAL,
                    "tool_calls": [
                        {
                            "id": "call_fake",
                            "type": "function",
                            "function": {"name": "send", "arguments": ARGUMENTS},
                        }
                    ],
                },
                "logprobs": {"content": [_logprob(t) for t in _pieces(FIELD_TEXT, 3)]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25},
    }


async def _fields_stream(request: web.Request, model: str) -> web.StreamResponse:
    response = await _start(request)
    for token in _pieces(FIELD_TEXT, 3):
        await response.write(_chunk(model, token, logprobs={"content": [_logprob(token)]}))
    for piece in _pieces(REFUSAL, 5):
        await response.write(_chunk(model, None, refusal=piece))
    call = {"index": 0, "id": "call_fake", "type": "function"}
    start = {**call, "function": {"name": "send", "arguments": ""}}
    await response.write(_chunk(model, None, tool_calls=[start]))
    for piece in _pieces(ARGUMENTS, 4):
        argument = {"index": 0, "function": {"arguments": piece}}
        await response.write(_chunk(model, None, tool_calls=[argument]))
    await _finish(response, model, "tool_calls")
    return response


async def completions(request: web.Request) -> web.Response:
    """`echo` for completions: the prompt and suffix it received, as the completion."""
    stats["requests"] += 1
    body = await request.json()
    stats["last"][body["model"]] = body
    text = f"echo:{json.dumps([body.get('prompt'), body.get('suffix')])}"
    return web.json_response(
        {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    """`echo` for embeddings: a fixed vector per input; `last` shows the inputs received."""
    stats["requests"] += 1
    body = await request.json()
    stats["last"][body["model"]] = body
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return web.json_response(
        {
            "object": "list",
            "model": body["model"],
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.0, 1.0]}
                for i in range(len(inputs))
            ],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )


async def transcriptions(request: web.Request) -> web.Response:
    """`echo` for transcriptions: the multipart form read like a backend does; the text
    names the model, the upload's size and the WAV's duration (a 400 for a file that is
    not a WAV), as `json` or, when asked, `text`."""
    stats["requests"] += 1
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return web.json_response({"error": {"message": "no file"}}, status=400)
    data = upload.file.read()
    try:
        with wave.open(io.BytesIO(data)) as audio:
            duration = audio.getnframes() / audio.getframerate()
    except (wave.Error, EOFError):
        return web.json_response({"error": {"message": "not a WAV file"}}, status=400)
    fields = {name: str(value) for name, value in form.items() if name != "file"}
    stats["last"][fields.get("model", "")] = {**fields, "file_bytes": len(data)}
    text = f"echo:{fields.get('model')}:{len(data)} bytes:{duration:.2f} s"
    if fields.get("response_format") == "text":
        return web.Response(text=text, content_type="text/plain")
    return web.json_response({"text": text, "usage": {"type": "duration", "seconds": duration}})


async def tokenize(request: web.Request) -> web.Response:
    """vLLM's `POST /tokenize`, for the `paced` model only (17 tokens, whatever the prompt);
    any other model gets the 404 of a backend that cannot count."""
    body = await request.json()
    if body.get("model") != "paced" or not (body.get("messages") or body.get("prompt")):
        return web.json_response({"error": {"message": "not found"}}, status=404)
    return web.json_response({"count": 17, "max_model_len": 2048, "tokens": list(range(17))})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(stats)


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_get("/stats", get_stats)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
