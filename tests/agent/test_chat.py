"""Chat and text completions on the real SmolLM2 model through llama.cpp."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.testclient import TestClient

pytestmark = pytest.mark.models

MODEL = "smollm2-135m-instruct"
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking the framing on the way."""
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        events.append(block.removeprefix("data: "))
    return events


def stream_chunks(client: TestClient, path: str, body: dict) -> tuple[list[dict], str]:
    response = client.post(path, json={**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]], response.text


def test_it_answers_the_capital_of_france(agent: TestClient) -> None:
    response = agent.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": CAPITAL, "temperature": 0}
    )
    assert response.status_code == 200
    completion = ChatCompletion.model_validate(response.json())
    assert "Paris" in completion.choices[0].message.content
    assert completion.model == MODEL
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert "timings" not in response.json()
    assert response.headers["x-request-id"]


def test_streamed_chunks_concatenate_to_the_non_streamed_text(agent: TestClient) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a short story about a cat."}],
        "temperature": 0.8,
        "seed": 1234,
        "max_tokens": 40,
    }
    whole = agent.post("/v1/chat/completions", json=body).json()
    chunks, _ = stream_chunks(agent, "/v1/chat/completions", body)
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    streamed = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
    assert streamed == whole["choices"][0]["message"]["content"]
    assert all(c.model == MODEL and c.object == "chat.completion.chunk" for c in parsed)
    # Without include_usage there is no usage chunk.
    assert all(c.usage is None for c in parsed)


def test_include_usage_adds_a_final_chunk_with_no_choices(agent: TestClient) -> None:
    body = {
        "model": MODEL,
        "messages": CAPITAL,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    chunks, _ = stream_chunks(agent, "/v1/chat/completions", body)
    last = ChatCompletionChunk.model_validate(chunks[-1])
    assert last.choices == []
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c["choices"] for c in chunks[:-1])


def test_it_honours_max_tokens_and_stop(agent: TestClient) -> None:
    limited = agent.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": CAPITAL, "max_tokens": 3, "temperature": 0},
    ).json()
    assert limited["usage"]["completion_tokens"] == 3
    assert limited["choices"][0]["finish_reason"] == "length"
    stopped = agent.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": CAPITAL, "stop": ["Paris"], "temperature": 0},
    ).json()
    assert "Paris" not in stopped["choices"][0]["message"]["content"]
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_the_same_seed_gives_the_same_sample(agent: TestClient) -> None:
    body = {"model": MODEL, "messages": CAPITAL, "temperature": 1.0, "top_p": 0.9, "max_tokens": 20}
    first = agent.post("/v1/chat/completions", json={**body, "seed": 7}).json()
    again = agent.post("/v1/chat/completions", json={**body, "seed": 7}).json()
    assert first["choices"][0]["message"] == again["choices"][0]["message"]


def test_it_completes_text_with_and_without_streaming(agent: TestClient) -> None:
    body = {"model": MODEL, "prompt": "The capital of France is", "temperature": 0, "max_tokens": 8}
    response = agent.post("/v1/completions", json=body)
    completion = Completion.model_validate(response.json())
    assert "Paris" in completion.choices[0].text
    assert completion.usage.completion_tokens == 8
    chunks, _ = stream_chunks(
        agent, "/v1/completions", {**body, "stream_options": {"include_usage": True}}
    )
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == completion.choices[0].text
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_concurrent_requests_are_batched_not_queued(agent: TestClient) -> None:
    def one(seed: int, started: float) -> tuple[float, float]:
        """Stream one completion; returns (first token, end) in seconds since `started`."""
        body = {
            "model": MODEL,
            "prompt": f"Once upon a time, in village number {seed},",
            "max_tokens": 64,
            "temperature": 0.9,
            "seed": seed,
            "stop": [],
            "stream": True,
        }
        first = None
        with agent.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if first is None and line.startswith("data: {"):
                    first = time.perf_counter() - started
        return first, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda seed: one(seed, started), range(4)))
    firsts, ends = [first for first, _ in results], [end for _, end in results]
    # Queued, the fourth request would see its first token only after the first had finished;
    # batched, all four are decoding before any of them ends. An order, not a timing: how much
    # faster batching makes four requests is a figure of `bench/agent_bench.py`.
    assert max(firsts) < min(ends), f"first tokens {firsts}, ends {ends}"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "gpt-17", "messages": CAPITAL}, 404, "model", "model_not_found"),
        ({"model": MODEL, "messages": []}, 400, "messages", None),
        ({"model": MODEL}, 400, "messages", None),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, None, None),
        ({"model": MODEL, "messages": CAPITAL, "temperature": 5}, 400, "temperature", None),
        ({"model": MODEL, "messages": CAPITAL, "n": 3}, 400, "n", None),
        ({"model": MODEL, "messages": CAPITAL, "tools": []}, 400, "tools", None),
        (
            {"model": MODEL, "messages": CAPITAL, "stream_options": {"include_usage": True}},
            400,
            "stream_options",
            None,
        ),
    ],
    ids=[
        "unknown-model",
        "empty-messages",
        "no-messages",
        "bad-role",
        "bad-temperature",
        "n",
        "tools",
        "stream-options-without-stream",
    ],
)
def test_it_rejects_bad_chat_requests(
    agent: TestClient, body: dict, status: int, param: str | None, code: str | None
) -> None:
    response = agent.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_longer_than_the_context_is_a_400_naming_messages(
    agent: TestClient, stream: bool
) -> None:
    messages = [{"role": "user", "content": "hello " * 5000}]
    response = agent.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": messages, "stream": stream}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages"
    assert error["code"] == "context_length_exceeded"
    # The agent keeps serving after bad input.
    ok = agent.post("/v1/chat/completions", json={"model": MODEL, "messages": CAPITAL})
    assert ok.status_code == 200


def test_invalid_json_and_unknown_paths_use_the_error_envelope(agent: TestClient) -> None:
    response = agent.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    missing = agent.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    wrong_method = agent.get("/v1/chat/completions")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


def test_models_lists_the_built_in_models(agent: TestClient) -> None:
    body = agent.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert ids == {"smollm2-135m-instruct", "all-minilm-l6-v2", "whisper-tiny.en", "whisper-base"}
    for model in body["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model"
    assert agent.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    assert agent.get("/v1/models/nope").json()["error"]["code"] == "model_not_found"


def test_metrics_count_requests_and_tokens(agent: TestClient) -> None:
    agent.post("/v1/chat/completions", json={"model": MODEL, "messages": CAPITAL, "max_tokens": 4})
    text = agent.get("/metrics").text
    assert (
        'cubeai_agent_requests_total{endpoint="/v1/chat/completions",model="smollm2-135m-instruct",status="200"}'
        in text
    )
    assert 'cubeai_agent_tokens_total{kind="completion",model="smollm2-135m-instruct"}' in text
    assert "cubeai_agent_request_seconds_bucket" in text
