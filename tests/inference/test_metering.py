"""Exact metering through the real gateway: the backend's usage when it reports it, else
what was delivered (a client that left, a stream the guardrails ended), and guard-model
calls metered under the caller's domain as their own endpoint."""

import httpx
import openai
import orjson
import pytest

from domains import permissions, services
from domains.models import Domain, User
from domains.selectors import Actor
from guardrails.services import policy_save
from inference.models import Backend, Deployment, Model
from tests.inference.conftest import _token, routed, usage_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


@pytest.fixture(scope="module")
def metered(django_db_blocker, gateway_url, fake_upstream_url):
    with django_db_blocker.unblock():
        remove_cast()
        owner = User.objects.create_user("mtr-owner@example.com", "pw-owner-123456")
        domain = services.domain_create(creator=owner, name="Metered", route="mtr-metered")
        fake = Backend.objects.create(
            name="mtr-fake", base_url=f"{fake_upstream_url}/v1", kind="openai",
            allow_not_confidential=True,
        )  # fmt: skip

        def model(name: str, upstream: str) -> None:
            row = Model.objects.create(name=name, tasks=["chat"])
            Deployment.objects.create(model=row, backend=fake, upstream_model=upstream)

        model("mtr-guard", "guard")
        policy_save(
            domain=domain,
            actor=Actor(user=owner, permissions=frozenset(permissions.ALL)),
            document={
                "input": [
                    {
                        "NAME": "guardrails.checks.model.GuardModel",
                        "OPTIONS": {"model": "mtr-guard", "timeout_ms": 3000},
                    }
                ],
                "output": [
                    {
                        "NAME": "guardrails.checks.denylist.DenyList",
                        "OPTIONS": {"terms": ["zebra crossing"]},
                    }
                ],
            },
        )
        # The models the tests call last: once the running gateway lists them, its
        # snapshot has the policy too.
        model("mtr-paced", "paced")
        model("mtr-echo", "echo")
        token = _token(owner, permissions.ALL)
    base_url = f"{gateway_url}/proxy/{domain.pk}/v1"
    routed(base_url, token, present=["mtr-paced", "mtr-echo", "mtr-guard"])
    yield base_url, token, domain
    with django_db_blocker.unblock():
        remove_cast()


def remove_cast() -> None:
    Domain.objects.filter(route__startswith="mtr-").delete()
    User.objects.filter(email__startswith="mtr-").delete()
    Model.objects.filter(name__startswith="mtr-").delete()
    Backend.objects.filter(name__startswith="mtr-").delete()


def chat_body(model: str, content: str = "count", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.parametrize("read", [1, 3])
def test_a_client_that_leaves_after_n_chunks_is_metered_n_completion_tokens(metered, read):
    base, token, _ = metered
    with httpx.stream(
        "POST",
        f"{base}/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json=chat_body("mtr-paced", stream=True),
        timeout=10,
    ) as response:
        request_id = response.headers["x-request-id"]
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: {") and orjson.loads(line[6:])["choices"][0]["delta"].get(
                "content"
            ):
                seen += 1
                if seen == read:
                    break
    (row,) = [r for r in usage_rows(request_id, 2) if r["endpoint"] == "chat.completions"]
    assert row["status"] == 499
    assert row["usage_source"] == "gateway"
    # The chunk in flight when the client left may have been generated too.
    assert read <= row["completion_tokens"] <= read + 1
    # The prompt, as the backend's /tokenize counted it.
    assert row["prompt_tokens"] == 17


def test_a_stream_the_guardrails_end_is_metered_with_what_was_sent(metered):
    base, token, _ = metered
    client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        stream=True, **chat_body("mtr-echo", "a zebra crossing")
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = [c for c in response.parse() if c.choices]
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    (row,) = [r for r in usage_rows(request_id, 2) if r["endpoint"] == "chat.completions"]
    # Five words, then the echo of the prompt fired the block: six chunks were generated.
    assert row["completion_tokens"] == 6
    assert row["usage_source"] == "gateway"


def test_a_stream_that_did_not_ask_for_usage_is_metered_from_the_backend(metered):
    base, token, _ = metered
    client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        stream=True, **chat_body("mtr-paced")
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert all(chunk.usage is None for chunk in chunks)
    (row,) = [r for r in usage_rows(request_id, 2) if r["endpoint"] == "chat.completions"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 6)
    assert row["usage_source"] == "backend"


def test_a_guard_model_call_is_metered_under_the_callers_domain(metered):
    base, token, domain = metered
    client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
    response = client.chat.completions.with_raw_response.create(**chat_body("mtr-paced"))
    found = usage_rows(response.headers["x-request-id"], 2)
    by_endpoint = {row["endpoint"]: row for row in found}
    assert set(by_endpoint) == {"chat.completions", "guardrails.classify"}
    guard_row = by_endpoint["guardrails.classify"]
    assert guard_row["model"] == "mtr-guard"
    assert guard_row["domain_id"] == domain.pk
    assert guard_row["total_tokens"] == 8 and guard_row["status"] == 200


def test_the_daily_aggregates_equal_the_rows_the_gateway_wrote(metered):
    """Through the real gateway: the flush writes the raw rows and the daily aggregates
    together, a request for a model the domain does not have is recorded without the name
    the client sent, and the usage API lists it as one "unknown model" row."""
    from inference.models import UsageDaily, UsageEvent
    from tests.inference.conftest import committed

    base, token, domain = metered
    client = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
    ids = []
    for fuzzed in ("a#s\u2026fuzz", "zz' OR 1=1 --"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.with_raw_response.create(**chat_body(fuzzed))
        ids.append(caught.value.response.headers["x-request-id"])
    ids.append(
        client.chat.completions.with_raw_response.create(**chat_body("mtr-paced")).headers[
            "x-request-id"
        ]
    )
    rows = [row for request_id in ids for row in usage_rows(request_id)]
    unknown = [row for row in rows if row["status"] == 404]
    assert len(unknown) == 2 and {row["model"] for row in unknown} == {""}

    def sums():
        raw = UsageEvent.objects.filter(domain=domain)
        daily = UsageDaily.objects.filter(domain=domain)
        return (
            (raw.count(), sum(raw.values_list("total_tokens", flat=True))),
            (
                sum(daily.values_list("requests", flat=True)),
                sum(daily.values_list("total_tokens", flat=True)),
            ),
            sorted(daily.values_list("model", flat=True).distinct()),
        )

    raw, daily, models = committed(sums)
    assert raw == daily
    assert "" in models and not any("fuzz" in m or "OR 1=1" in m for m in models)
