"""The OpenAI-compatible API end to end: the official `openai` client, the real gateway
(uvicorn) and the real agent with its real models."""

import base64
import re
import struct

import httpx
import openai
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.models, pytest.mark.django_db]


def test_it_lists_and_retrieves_models_in_openais_shape(stack):
    client = stack.client(stack.alice_token)
    listed = client.models.list()
    ids = [model.id for model in listed.data]
    assert "smollm2-135m-instruct" in ids and "all-minilm-l6-v2" in ids
    assert all(model.object == "model" and model.owned_by for model in listed.data)
    raw = httpx.get(
        f"{stack.base_url(stack.alpha)}/models",
        headers={"Authorization": f"Bearer {stack.alice_token}"},
    ).json()
    assert raw["object"] == "list"
    assert set(raw["data"][0]) == {"id", "object", "created", "owned_by"}
    model = client.models.retrieve("whisper-tiny.en")
    assert model.id == "whisper-tiny.en"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"


def test_it_chats_with_the_real_model(stack):
    client = stack.client(stack.alice_token)
    response = client.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=30,
    )
    completion = response.parse()
    assert "Paris" in completion.choices[0].message.content
    assert completion.model == "smollm2-135m-instruct"
    assert completion.usage.total_tokens > 0
    assert response.headers["x-request-id"]
    # The development agent is not confidential, and every response says so.
    assert response.headers["x-cube-confidential"] == "false"
    assert response.headers["x-cube-backend-attestation"] == "not-confidential"
    assert "x-guardrails-time-ms" in response.headers
    assert int(response.headers["x-ratelimit-remaining-requests"]) >= 0


def test_streamed_chunks_concatenate_to_the_same_text(stack):
    client = stack.client(stack.alice_token)
    params = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Name three colours."}],
        "temperature": 0,
        "seed": 7,
        "max_tokens": 24,
    }
    whole = client.chat.completions.create(**params).choices[0].message.content
    chunks = list(client.chat.completions.create(**params, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole
    # Usage was not asked for, so no usage chunk reaches the client.
    assert all(c.usage is None for c in chunks)


def test_a_stream_carries_usage_when_the_client_asks(stack):
    client = stack.client(stack.alice_token)
    chunks = list(
        client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0


def test_the_stream_ends_with_done(stack):
    with httpx.stream(
        "POST",
        f"{stack.base_url(stack.alpha)}/chat/completions",
        headers={"Authorization": f"Bearer {stack.alice_token}"},
        json={
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 5,
            "stream": True,
        },
        timeout=60,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in events)


def test_completions_with_and_without_streaming(stack):
    client = stack.client(stack.alice_token)
    text = client.completions.create(
        model="smollm2-135m-instruct",
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
    )
    assert text.choices[0].text.strip()
    assert text.object == "text_completion"
    streamed = list(
        client.completions.create(
            model="smollm2-135m-instruct", prompt="One, two,", max_tokens=6, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices).strip()


def test_embeddings_as_floats_and_base64(stack):
    client = stack.client(stack.alice_token)
    floats = client.embeddings.create(model="all-minilm-l6-v2", input=["a cat", "a kitten"])
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 384
    raw = httpx.post(
        f"{stack.base_url(stack.alpha)}/embeddings",
        headers={"Authorization": f"Bearer {stack.alice_token}"},
        json={"model": "all-minilm-l6-v2", "input": "a cat", "encoding_format": "base64"},
    ).json()
    decoded = struct.unpack("<384f", base64.b64decode(raw["data"][0]["embedding"]))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_embedding_dimensions_are_refused_for_a_model_without_them(stack):
    client = stack.client(stack.alice_token)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="all-minilm-l6-v2", input="x", dimensions=64)
    assert caught.value.body["param"] == "dimensions"


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length, ignoring case and punctuation."""
    ref = re.findall(r"[a-z']+", reference.lower())
    hyp = re.findall(r"[a-z']+", hypothesis.lower())
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1] / len(ref)


def test_it_transcribes_and_translates_speech(stack, speech):
    client = stack.client(stack.alice_token)
    english = speech("The quick brown fox jumps over the lazy dog.")
    with english.open("rb") as audio:
        text = client.audio.transcriptions.create(model="whisper-tiny.en", file=audio).text
    # Whisper tiny.en on synthetic speech varies a word or two between runs.
    assert word_error_rate("the quick brown fox jumps over the lazy dog", text) < 0.4, text
    with english.open("rb") as audio:
        srt = client.audio.transcriptions.create(
            model="whisper-tiny.en", file=audio, response_format="srt"
        )
    assert "-->" in srt
    german = speech("Guten Morgen, wie geht es dir heute? Das Wetter ist sehr schön.", voice="de")
    with german.open("rb") as audio:
        response = client.audio.translations.with_raw_response.create(
            model="whisper-base", file=audio, response_format="verbose_json"
        )
    # The relay is what is tested here; the model's translation quality is the agent's
    # tests' concern (whisper-base on synthetic German is weak and occasionally silent).
    body = response.http_response.json()
    assert body["task"] == "translate" and isinstance(body["text"], str)


def test_an_upload_over_the_limit_is_a_413_in_openais_envelope(stack):
    client = stack.client(stack.alice_token)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(
            model="whisper-tiny.en", file=("big.wav", b"\0" * (2 * 1024 * 1024), "audio/wav")
        )
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("call", "error", "param"),
    [
        (
            lambda c: c.chat.completions.create(
                model="smollm2-135m-instruct", messages=[{"role": "user", "content": "x"}], n=2
            ),
            openai.BadRequestError,
            "n",
        ),
        (
            lambda c: c.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            ),
            openai.BadRequestError,
            "tools",
        ),
        (
            lambda c: c.chat.completions.create(model="smollm2-135m-instruct", messages=[]),
            openai.BadRequestError,
            "messages",
        ),
        (
            lambda c: c.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": "x"}],
                temperature=7,
            ),
            openai.BadRequestError,
            "temperature",
        ),
        (
            lambda c: c.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": "x"}],
                extra_body={"made_up_parameter": 1},
            ),
            openai.BadRequestError,
            "made_up_parameter",
        ),
        (
            lambda c: c.chat.completions.create(
                model="missing", messages=[{"role": "user", "content": "x"}]
            ),
            openai.NotFoundError,
            "model",
        ),
        (
            lambda c: c.embeddings.create(model="smollm2-135m-instruct", input="x"),
            openai.BadRequestError,
            "model",
        ),
    ],
)
def test_bad_requests_raise_the_right_openai_exception(stack, call, error, param):
    with pytest.raises(error) as caught:
        call(stack.client(stack.alice_token))
    assert caught.value.body["param"] == param


def test_a_bad_token_is_an_authentication_error(stack):
    # The last character changed, whatever it was (a fixed "x" is the same token 1 time in 62).
    altered = stack.alice_token[:-1] + ("y" if stack.alice_token.endswith("x") else "x")
    for token in ("nope", altered):
        with pytest.raises(openai.AuthenticationError) as caught:
            stack.client(token).models.list()
        assert caught.value.body["type"] == "authentication_error"
        assert token not in str(caught.value.body)


def test_a_role_without_the_permission_is_a_permission_error(stack):
    bob = stack.client(stack.bob_token)
    assert bob.embeddings.create(model="all-minilm-l6-v2", input="x").data
    with pytest.raises(openai.PermissionDeniedError):
        bob.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "x"}]
        )


def test_a_token_for_one_domain_gets_404_on_another(stack):
    with pytest.raises(openai.NotFoundError):
        stack.client(stack.alice_token, stack.beta).models.list()
    with pytest.raises(openai.NotFoundError):
        stack.client(stack.charlie_token, stack.alpha).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}]
        )


def test_a_model_not_enabled_for_a_domain_is_404_there_and_works_elsewhere(stack):
    beta = stack.client(stack.charlie_token, stack.beta)
    with pytest.raises(openai.NotFoundError) as caught:
        beta.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["code"] == "model_not_found"
    assert "smollm2-135m-instruct" not in [m.id for m in beta.models.list()]
    assert (
        stack.client(stack.alice_token)
        .chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=3,
        )
        .choices
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/chat/completions", None, 405, "method_not_allowed"),
        ("POST", "/no/such/route", {}, 404, "unknown_url"),
        ("POST", "/chat/completions", "{not json", 400, "invalid_json"),
        ("POST", "/chat/completions", b"model=x", 415, "unsupported_media_type"),
    ],
)
def test_protocol_errors_use_openais_envelope(stack, method, path, body, status, code):
    headers = {"Authorization": f"Bearer {stack.alice_token}"}
    if isinstance(body, str):
        headers["Content-Type"] = "application/json"
        content = body.encode()
    elif isinstance(body, bytes):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        content = body
    else:
        content = None
    response = httpx.request(
        method, f"{stack.base_url(stack.alpha)}{path}", headers=headers, content=content
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) >= {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]


def test_a_well_formed_client_request_id_is_echoed(stack):
    response = httpx.get(
        f"{stack.base_url(stack.alpha)}/models",
        headers={"Authorization": f"Bearer {stack.alice_token}", "x-request-id": "client-123"},
    )
    assert response.headers["x-request-id"] == "client-123"
    odd = httpx.get(
        f"{stack.base_url(stack.alpha)}/models",
        headers={"Authorization": f"Bearer {stack.alice_token}", "x-request-id": "bad id\t!"},
    )
    assert odd.headers["x-request-id"].startswith("req_")
