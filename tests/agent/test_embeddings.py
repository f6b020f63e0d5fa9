"""Embeddings on the real all-MiniLM-L6-v2 int8 model through onnxruntime."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from openai.types import CreateEmbeddingResponse
from starlette.testclient import TestClient

pytestmark = pytest.mark.models

MODEL = "all-minilm-l6-v2"


def embed(client: TestClient, payload: object, **extra: object) -> np.ndarray:
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": payload, **extra})
    assert response.status_code == 200, response.text
    parsed = CreateEmbeddingResponse.model_validate(response.json())
    assert [d.index for d in parsed.data] == list(range(len(parsed.data)))
    assert parsed.usage.prompt_tokens > 0
    return np.array([d.embedding for d in parsed.data])


def test_embeddings_have_384_dimensions_and_unit_norm(agent: TestClient) -> None:
    vectors = embed(agent, ["A cat sits on the mat.", "Quarterly revenue grew by ten percent."])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_a_similar_pair_scores_higher_than_an_unrelated_pair(agent: TestClient) -> None:
    a, b, c = embed(
        agent,
        [
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The volcano erupted on Tuesday morning.",
        ],
    )
    assert float(a @ b) > float(a @ c) + 0.3


def test_all_input_shapes_give_the_same_vectors(agent: TestClient) -> None:
    text = "hello world"
    ids = [7592, 2088]  # "hello world" in the model's WordPiece vocabulary
    from_string = embed(agent, text)
    assert np.allclose(embed(agent, [text]), from_string, atol=1e-5)
    assert np.allclose(embed(agent, ids), from_string, atol=1e-5)
    assert np.allclose(embed(agent, [ids, ids]), np.vstack([from_string] * 2), atol=1e-5)


def test_batches_match_single_inputs(agent: TestClient) -> None:
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(40)]
    batched = embed(agent, texts)
    for i in (0, 13, 39):
        assert np.allclose(batched[i], embed(agent, texts[i])[0], atol=1e-4)


def test_base64_encoding_decodes_to_the_float_vectors(agent: TestClient) -> None:
    response = agent.post(
        "/v1/embeddings", json={"model": MODEL, "input": "hello", "encoding_format": "base64"}
    )
    encoded = response.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert np.allclose(decoded, embed(agent, "hello")[0], atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "status", "param"),
    [
        ({"dimensions": 128}, 400, "dimensions"),
        ({"input": ""}, 400, "input"),
        ({"input": []}, 400, "input"),
        ({"input": ["ok", ""]}, 400, "input"),
        ({"input": "word " * 400}, 400, "input"),
        ({"input": [10**9]}, 400, "input"),
        ({"encoding_format": "hex"}, 400, "encoding_format"),
        ({"model": "text-embedding-3-small"}, 404, "model"),
        ({"model": "smollm2-135m-instruct"}, 404, "model"),
    ],
    ids=[
        "dimensions",
        "empty-string",
        "empty-list",
        "empty-item",
        "too-long",
        "bad-token-id",
        "bad-encoding",
        "unknown-model",
        "chat-model",
    ],
)
def test_it_rejects_bad_embedding_requests(
    agent: TestClient, extra: dict, status: int, param: str
) -> None:
    response = agent.post("/v1/embeddings", json={"model": MODEL, "input": "hello", **extra})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"]
