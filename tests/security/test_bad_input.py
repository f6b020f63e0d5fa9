"""Bad input that got a 500 or was stored as sent (findings, probed from outside):

- a body nested 254 to 1,023 levels deep passed validation and failed when re-encoded for
  the backend (500): the depth is bounded once, at parsing, for both APIs;
- type-loose values were accepted (`"stream": "yes"` started a stream, `"max_tokens": "5"`
  worked), and an empty body said "Missing required parameter: 'None'";
- a NUL or control character in a model name was stored with the usage row (on PostgreSQL
  a NUL failed the whole batch insert).
"""

import uuid

import orjson
import pytest

from domains import permissions
from inference import metering, pipeline
from inference.context import Caller
from inference.errors import InferenceError
from inference.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)


def nested(levels: int):
    """A value `levels` arrays deep."""
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.fixture
def chat_url(domain, fake_backends, pooled_client):
    backend = fake_backends.backend("sec-echo")
    fake_backends.deploy("echo", [(backend, "echo")])
    return f"/proxy/{domain.pk}/v1/chat/completions"


def post(client, url, token, body) -> tuple[int, dict, dict]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    response = client.post(
        url, raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    return response.status_code, response.json(), response.headers


def chat(content: str = "hi", **extra) -> dict:
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}


def deep_bodies(levels: int) -> dict[str, bytes]:
    """Bodies carrying a value `levels` deep where each finding put it. orjson cannot encode
    past 254 levels, so the deepest ones are written by hand."""
    inner = b"[" * (levels - 1) + b"[]" + b"]" * (levels - 1)
    base = orjson.dumps(chat())[:-1]
    return {
        "response_format": base + b',"response_format":{"type":"json_schema","x":' + inner + b"}}",
        "tools": base + b',"tools":[{"type":"function","x":' + inner + b"}]}",
        "tool_choice": base + b',"tool_choice":{"type":"function","x":' + inner + b"}}",
        "message key": orjson.dumps(chat())[:-3] + b',"extra":' + inner + b"}]}",
    }


@pytest.mark.parametrize("levels", [254, 1023, 1500])
def test_deep_json_is_refused_at_parsing_on_the_openai_api(client, alice, pat, chat_url, levels):
    token = pat(alice)
    for where, body in deep_bodies(levels).items():
        status, answer, headers = post(client, chat_url, token, body)
        assert status == 400, where
        assert answer["error"]["type"] == "invalid_request_error"
        assert answer["error"]["code"] == "invalid_json"
        assert "nested too deeply" in answer["error"]["message"]
        assert headers["x-request-id"]


def test_json_within_the_depth_bound_still_works(client, alice, pat, chat_url):
    status, answer, _ = post(client, chat_url, pat(alice), chat(response_format={"type": "text"}))
    assert status == 200 and answer["choices"][0]["message"]["content"].startswith("echo:")


@pytest.mark.parametrize("levels", [254, 1500])
def test_deep_json_is_refused_on_the_management_api(api, alice, domain, levels):
    api.force_authenticate(alice)
    inner = b"[" * (levels - 1) + b"[]" + b"]" * (levels - 1)
    response = api.post(
        f"/api/domains/{domain.pk}/roles/",
        b'{"name":"x","permissions":' + inner + b"}",
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "nested too deeply" in str(response.json())


@pytest.mark.parametrize(
    ("field", "value", "expected", "got"),
    [
        ("stream", "yes", "a boolean", "a string"),
        ("stream", 1, "a boolean", "an integer"),
        ("max_tokens", "5", "an integer", "a string"),
        ("temperature", "0.5", "a decimal", "a string"),
        ("n", True, "an integer", "a boolean"),
    ],
)
def test_type_loose_values_are_refused_as_openai_does(
    client, alice, pat, chat_url, field, value, expected, got
):
    status, answer, _ = post(client, chat_url, pat(alice), chat(**{field: value}))
    assert status == 400
    assert answer["error"] == {
        "message": f"Invalid type for '{field}': expected {expected}, but got {got} instead.",
        "type": "invalid_request_error",
        "param": field,
        "code": "invalid_type",
    }


def test_a_number_where_a_decimal_is_asked_is_fine(client, alice, pat, chat_url):
    status, _, _ = post(client, chat_url, pat(alice), chat(temperature=1, max_tokens=5))
    assert status == 200


@pytest.mark.parametrize("body", [b"", b"{}"])
def test_an_empty_body_names_the_missing_parameter(client, alice, pat, chat_url, body):
    status, answer, _ = post(client, chat_url, pat(alice), body)
    assert status == 400
    assert answer["error"]["message"] == "Missing required parameter: 'model'."
    assert answer["error"]["param"] == "model"


@pytest.mark.parametrize("name", ["ec\x00ho", "echo\n", "\x1b[31mecho", "echo\x7f"])
def test_control_characters_in_a_model_name_are_refused(client, alice, pat, chat_url, name):
    metering.drain()
    status, answer, _ = post(client, chat_url, pat(alice), {**chat(), "model": name})
    assert status == 400
    assert answer["error"]["param"] == "model"
    assert "control characters" in answer["error"]["message"]
    assert metering.drain() == []


async def test_the_pipeline_refuses_them_for_every_entry_point(chat_url, domain, alice):
    """The WebSocket consumer and the Celery tasks call the pipeline without the schema: the
    name is refused there too, and the usage row of the refusal names no model."""
    metering.drain()
    caller = Caller(
        token_id=uuid.uuid4().int % 10**9,
        user_id=alice.pk,
        key_id="k",
        domain_id=str(domain.pk),
        permissions=frozenset(permissions.ALL),
    )
    with pytest.raises(InferenceError) as caught:
        await pipeline.chat(caller, {**chat(), "model": "ec\x00ho"}, request_id="req-nul")
    assert caught.value.status == 400 and caught.value.param == "model"
    (event,) = metering.drain()
    assert event["model"] == "" and event["status"] == 400


def test_a_usage_batch_with_a_nul_is_written_whole(domain, alice):
    """On PostgreSQL a NUL in any text failed the insert of the whole batch."""
    metering.drain()
    for model in ("good-1", "ba\x00d", "good-2"):
        metering.record(
            domain_id=str(domain.pk),
            user_id=alice.pk,
            token_id=1,
            request_id="req-batch",
            endpoint="chat.completions",
            model=model,
            backend="b\x00",
            status=404,
            prompt_tokens=0,
            completion_tokens=0,
            total_tokens=0,
            latency_ms=1.0,
        )
    stored = sorted(
        UsageEvent.objects.filter(request_id="req-batch").values_list("model", "backend")
    )
    assert stored == [("bad", "b"), ("good-1", "b"), ("good-2", "b")]
