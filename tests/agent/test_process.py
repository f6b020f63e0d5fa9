"""The agent as a real process: ``python -m agent``, the OpenAI SDK against it, TLS, and a
second agent relaying to it as its upstream runtime."""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from starlette.testclient import TestClient

from agent.app import create_app
from agent.config import AgentConfig, UpstreamModel
from tests.agent.conftest import AgentProcess
from tests.agent.credentials import AGENT_CREDENTIAL, AUTH, credentials_file
from tests.agent.test_attestation import make_tls_pair, spki_der

pytestmark = pytest.mark.models


def test_the_openai_sdk_works_against_the_agent_process(agent_process: AgentProcess) -> None:
    client = openai.OpenAI(base_url=f"{agent_process.url}/v1", api_key=AGENT_CREDENTIAL)
    assert {m.id for m in client.models.list()} == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    answer = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
    )
    assert "Paris" in answer.choices[0].message.content
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        answer.choices[0].message.content
    )
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    embedding = client.embeddings.create(model="all-minilm-l6-v2", input="hello")
    assert len(embedding.data[0].embedding) == 384
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    metrics = httpx.get(f"{agent_process.url}/metrics", headers=AUTH).text
    assert "cubeai_agent_requests_total" in metrics


@pytest.fixture
def relay(agent_process: AgentProcess, tmp_path: Path) -> Iterator[TestClient]:
    """An agent with no local models that relays to ``agent_process`` as its upstream."""
    config = AgentConfig(
        credentials_file=credentials_file(tmp_path),
        models=(),
        attestation="none",
        upstream_url=f"{agent_process.url}/v1",
        upstream_api_key=AGENT_CREDENTIAL,
        upstream_models=(
            UpstreamModel(id="gpu-chat", task="chat", upstream_id="smollm2-135m-instruct"),
            UpstreamModel(id="gpu-embed", task="embeddings", upstream_id="all-minilm-l6-v2"),
        ),
    )
    with TestClient(create_app(config), headers=AUTH) as client:
        yield client


def test_it_relays_chat_streams_and_embeddings_to_an_upstream_runtime(relay: TestClient) -> None:
    body = {
        "model": "gpu-chat",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
    }
    answer = relay.post("/v1/chat/completions", json=body).json()
    assert answer["model"] == "gpu-chat"
    assert "Paris" in answer["choices"][0]["message"]["content"]
    streamed = relay.post(
        "/v1/chat/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = [e.removeprefix("data: ") for e in streamed.text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["model"] == "gpu-chat" for c in chunks)
    vectors = relay.post("/v1/embeddings", json={"model": "gpu-embed", "input": ["a", "b"]}).json()
    assert len(vectors["data"]) == 2
    assert len(vectors["data"][0]["embedding"]) == 384


def test_upstream_errors_keep_the_openai_envelope(relay: TestClient) -> None:
    too_long = relay.post(
        "/v1/chat/completions",
        json={"model": "gpu-chat", "messages": [{"role": "user", "content": "hi " * 5000}]},
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "messages"


def test_an_unreachable_upstream_is_a_502(tmp_path: Path) -> None:
    config = AgentConfig(
        credentials_file=credentials_file(tmp_path),
        models=(),
        attestation="none",
        upstream_url="http://127.0.0.1:9/v1",
        upstream_models=(UpstreamModel(id="gpu-chat"),),
    )
    with TestClient(create_app(config), headers=AUTH) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "gpu-chat", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_the_agent_serves_tls_and_binds_its_key_in_attestation(
    tmp_path: Path, cache_dir: Path
) -> None:
    cert, key = make_tls_pair(tmp_path)
    process = AgentProcess(
        {
            "CUBEAI_AGENT_MODELS": "",
            "CUBEAI_AGENT_ATTESTATION": "none",
            "CUBEAI_AGENT_TLS_CERT": str(cert),
            "CUBEAI_AGENT_TLS_KEY": str(key),
            "CUBEAI_AGENT_CACHE_DIR": str(cache_dir),
        },
        workdir=tmp_path,
        scheme="https",
    )
    context = ssl.create_default_context(cafile=str(cert))
    try:
        process.wait_ready(verify=context)
        nonce = secrets.token_bytes(32)
        reply = httpx.post(
            f"{process.url}/attestation", json={"nonce": nonce.hex()}, verify=context
        ).json()
    finally:
        output = process.stop()
    assert reply["provider"] == "none"
    assert reply["report_data"] == hashlib.sha512(nonce + spki_der(cert)).hexdigest()
    # Prompts and keys never reach the log; the start-up line names the provider.
    assert "attestation provider none" in output


def test_a_bad_configuration_exits_with_a_clear_message(tmp_path: Path) -> None:
    process = AgentProcess({"CUBEAI_AGENT_ATTESTATION": "sgx"}, workdir=tmp_path)
    assert process.process.wait(timeout=30) == 2
    assert "attestation must be one of" in process.stop()
