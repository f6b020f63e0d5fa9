"""Requests answered before the pipeline (a bad token, bad JSON, a body over its limit, an
unknown path) are counted in /metrics and logged on `cubeai.requests` like any call, once,
without the token; a request the pipeline took is still counted once."""

import logging

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from domains import services
from domains.models import User

pytestmark = pytest.mark.django_db(transaction=True)
METRICS_TOKEN = "a-long-metrics-token-for-the-record-test"


class Lines(logging.Handler):
    """The request log's lines, as written (the logger does not propagate to caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict] = []
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.text += message + "\n"
        self.lines.append(orjson.loads(message))


@pytest.fixture
def lines():
    # Set up first: `cubeai.asgi` sets Django up, which configures logging afresh.
    import cubeai.asgi  # noqa: F401

    handler = Lines()
    logger = logging.getLogger("cubeai.requests")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def requests_counted(client: httpx.AsyncClient) -> dict[tuple[str, str, str], float]:
    scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    counted = {}
    for sample in families["cubeai_requests"].samples:
        if sample.name == "cubeai_requests_total":
            labels = sample.labels
            counted[labels["endpoint"], labels["model"], labels["status"]] = sample.value
    durations = families["cubeai_request_duration_seconds"].samples
    for sample in durations:
        if sample.name == "cubeai_request_duration_seconds_count":
            labels = sample.labels
            key = (labels["endpoint"], labels["model"], labels["status"])
            assert sample.value == counted[key], key  # one duration per request
    return counted


async def test_requests_refused_before_the_pipeline_are_counted_and_logged_once(
    settings, pat, lines
):
    from cubeai.asgi import application

    settings.CUBEAI_METRICS_TOKEN = METRICS_TOKEN
    settings.CUBEAI_METRICS_ALLOWED_NETWORKS = []
    settings.CUBEAI_ROUTING_REFRESH_SECONDS = 0
    owner = await sync_to_async(User.objects.create_user)(
        "record-owner@example.com", "pw-owner-123456"
    )
    domain = await sync_to_async(services.domain_create)(
        creator=owner, name="Record", route="record"
    )
    token = await sync_to_async(pat)(owner, domains=[domain])
    wrong = "cube_" + "x" * 40
    chat = f"/proxy/{domain.pk}/v1/chat/completions"
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        before = await requests_counted(client)
        bad_token = await client.post(
            chat, json={"model": "m"}, headers={"Authorization": f"Bearer {wrong}"}
        )
        bad_json = await client.post(
            chat,
            content=b'{"model": ',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        # The pipeline takes this one (the model is not the domain's): it records it itself.
        no_model = await client.post(
            chat,
            json={"model": "not-here", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {token}"},
        )
        nowhere = await client.get(
            f"/proxy/{domain.pk}/v1/nowhere/fuzzed-name", headers={"Authorization": "Bearer x"}
        )
        settings.CUBEAI_MAX_JSON_BYTES = 100
        too_large = await client.post(
            chat,
            content=b'{"model": "' + b"m" * 200 + b'"}',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        settings.CUBEAI_MAX_JSON_BYTES = 1_000_000
        after = await requests_counted(client)
    assert [bad_token.status_code, bad_json.status_code, no_model.status_code] == [401, 400, 404]
    assert [nowhere.status_code, too_large.status_code] == [404, 413]

    def added(key):
        return after.get(key, 0) - before.get(key, 0)

    assert added(("chat.completions", "unknown", "401")) == 1
    assert added(("chat.completions", "unknown", "400")) == 1
    assert added(("chat.completions", "unknown", "404")) == 1  # once, by the pipeline
    assert added(("chat.completions", "unknown", "413")) == 1
    assert added(("unknown", "unknown", "404")) == 1
    # No label holds a string the client sent.
    assert not [key for key in after if "fuzzed" in "".join(key) or "not-here" in key[1]]

    mine = [line for line in lines.lines if line["domain"] == str(domain.pk)]
    by_status = {(line["endpoint"], line["status"]): line for line in mine}
    assert [(line["endpoint"], line["status"]) for line in mine] == [
        ("chat.completions", 401),
        ("chat.completions", 400),
        ("chat.completions", 404),
        ("unknown", 404),
        ("chat.completions", 413),
    ]
    unauthenticated = by_status["chat.completions", 401]
    assert unauthenticated["request_id"] == bad_token.headers["x-request-id"]
    assert unauthenticated["token_id"] is None
    assert unauthenticated["model"] == "unknown"
    assert unauthenticated["latency_ms"] >= 0
    # A refusal after authentication names the token (its id) and the user.
    invalid = by_status["chat.completions", 400]
    assert invalid["request_id"] == bad_json.headers["x-request-id"]
    assert invalid["token_id"] is not None
    assert invalid["user_id"] == owner.pk
    assert by_status["chat.completions", 413]["request_id"] == too_large.headers["x-request-id"]
    assert token not in lines.text
    assert wrong not in lines.text
    assert "fuzzed" not in lines.text
