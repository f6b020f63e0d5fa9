"""Two real gateway processes sharing one limiter store (Redis with REDIS_URL, the
machine's SQLite file on the embedded default) and one metrics folder: limits hold across
both, a lowered limit shows within the documented delay, a spent budget answers
`insufficient_quota`, budgets and usage rows equal what the backend reported, and
`/metrics` adds both processes up."""

import datetime
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from domains import permissions, services
from domains.models import AuditEvent, Domain, User
from inference.models import Backend, Deployment, Model
from limits.models import DomainLimits, TokenLimits
from tests.conftest import _stop
from tests.inference.conftest import committed, retry_locked, start_gateway, usage_rows
from tokens import services as token_services
from tokens.models import Token

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

METRICS_TOKEN = "metrics-secret-for-tests-0123456789"
PASSWORD = "pw-limits-123456"


class Pair:
    def __init__(self, urls, logs, domain_id, owner_email):
        self.urls, self.logs, self.domain_id, self.owner_email = urls, logs, domain_id, owner_email

    def api(self, gateway: int) -> str:
        return f"{self.urls[gateway]}/proxy/{self.domain_id}/v1"


@pytest.fixture(scope="module")
def pair(django_db_setup, django_db_blocker, fake_upstream_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits-pair")
    metrics_dir = tmp / "metrics"
    metrics_dir.mkdir()
    env = {
        "CUBEAI_LIMITS_CACHE_SECONDS": "1",
        "CUBEAI_LIMITS_SQLITE_PATH": django_settings.CUBEAI_LIMITS_SQLITE_PATH,
        "CUBEAI_METRICS_TOKEN": METRICS_TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with django_db_blocker.unblock():
        owner = User.objects.create_user("limits-owner@example.com", PASSWORD)
        domain = services.domain_create(creator=owner, name="Limits", route="limits-e2e")
        backend = Backend.objects.create(
            name="limits-fake",
            base_url=f"{fake_upstream_url}/v1",
            kind="openai",
            allow_not_confidential=True,
        )
        model = Model.objects.create(name="limits-echo", tasks=["chat"], context_length=2048)
        Deployment.objects.create(model=model, backend=backend, upstream_model="echo")
        slow = Model.objects.create(name="limits-slow", tasks=["chat"], context_length=2048)
        Deployment.objects.create(model=slow, backend=backend, upstream_model="slow-stream")
        processes, urls, logs = [], [], []
        for index in range(2):
            folder = tmp / f"gateway-{index}"
            folder.mkdir()
            process, url = start_gateway(folder, **env)
            processes.append(process)
            urls.append(url)
            logs.append(folder / "web.log")
    yield Pair(urls, logs, str(domain.pk), owner.email)
    for process in processes:
        _stop(process)
    with django_db_blocker.unblock():
        Domain.objects.filter(route="limits-e2e").delete()
        User.objects.filter(email="limits-owner@example.com").delete()
        Backend.objects.filter(name="limits-fake").delete()
        Model.objects.filter(name__in=["limits-echo", "limits-slow"]).delete()


def new_token(pair: Pair, **limits) -> tuple[str, int]:
    """A fresh token of the owner (fresh counters), with these limits in the domain."""

    def issue():
        owner = User.objects.get(email=pair.owner_email)
        token, secret = token_services.token_issue(
            owner=owner,
            name=f"t-{uuid.uuid4().hex[:6]}",
            scopes=sorted(permissions.ALL),
            domains=None,
            expires_at=timezone.now() + datetime.timedelta(days=1),
        )
        if limits:
            TokenLimits.objects.create(domain_id=pair.domain_id, token=token, **limits)
        return secret, token.pk

    return retry_locked(lambda: committed(issue))


def chat(pair: Pair, gateway: int, secret: str, **extra) -> httpx.Response:
    body = {"model": "limits-echo", "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(
        f"{pair.api(gateway)}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def burst(pair: Pair, secret: str, count: int, **extra) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda i: chat(pair, i % 2, secret, **extra), range(count)))


def test_a_tokens_request_limit_holds_across_both_servers(pair):
    secret, _ = new_token(pair, requests_per_minute=5)
    answers = burst(pair, secret, 24)
    accepted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert 5 <= len(accepted) <= 6, [a.status_code for a in answers]
    assert len(accepted) + len(refused) == 24
    for answer in refused:
        error = answer.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["limit"] == "requests_per_minute" and error["scope"] == "token"
        assert "requests per minute" in error["message"]
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.headers["x-ratelimit-limit-requests"] == "5"
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    for answer in accepted:
        assert answer.headers["x-ratelimit-limit-requests"] == "5"
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
        assert int(answer.headers["x-ratelimit-limit-tokens"]) > 0
        assert "x-ratelimit-remaining-tokens" in answer.headers
        assert "x-ratelimit-reset-tokens" in answer.headers


def test_a_tokens_per_minute_limit_holds_across_both_servers(pair):
    # Each call reserves its prompt's estimate plus max_tokens (1 + 10) and settles at the
    # backend's count (8): at most 100 tokens a minute can be spent, within one call more.
    secret, _ = new_token(pair, tokens_per_minute=100)
    answers = burst(pair, secret, 30, max_tokens=10)
    accepted = [a for a in answers if a.status_code == 200]
    spent = sum(a.json()["usage"]["total_tokens"] for a in accepted)
    assert spent + 11 >= 100 - 11 and spent <= 100 + 11, spent
    refused = [a for a in answers if a.status_code == 429]
    assert refused, "the limit never refused"
    assert all("tokens per minute" in a.json()["error"]["message"] for a in refused)
    assert all(a.headers["x-ratelimit-limit-tokens"] == "100" for a in refused)


def test_concurrent_streams_per_token_hold_across_both_servers(pair):
    secret, _ = new_token(pair, concurrent_streams=1)
    body = {"model": "limits-slow", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.stream(
        "POST",
        f"{pair.api(0)}/chat/completions",
        json={**body, "stream": True},
        headers=headers,
        timeout=30,
    ) as first:
        assert first.status_code == 200
        second = chat(pair, 1, secret, model="limits-slow", stream=True)
        assert second.status_code == 429
        assert second.json()["error"]["limit"] == "concurrent_streams"
        assert second.headers["Retry-After"] == "1"
        # A call that does not stream needs no slot.
        assert chat(pair, 1, secret).status_code == 200
        assert "[DONE]" in first.read().decode()
    deadline = time.monotonic() + 5
    while (again := chat(pair, 1, secret, stream=True)).status_code == 429:
        assert time.monotonic() < deadline, "the slot was not freed"
        time.sleep(0.1)
    assert again.status_code == 200


def _signed_in(base: str) -> httpx.Client:
    session = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
    session.get("/signin/")
    response = session.post(
        "/signin/",
        data={
            "username": "limits-owner@example.com",
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/signin/"},
    )
    assert response.status_code == 302, response.text[:500]
    return session


def test_an_admin_lowers_the_domain_limit_on_the_page_and_both_servers_apply_it(pair):
    secret, _ = new_token(pair)
    before = chat(pair, 1, secret)
    assert int(before.headers["x-ratelimit-limit-requests"]) > 40
    session = _signed_in(pair.urls[0])
    page = f"/domains/{pair.domain_id}/limits/"
    assert "Limits and budget" in session.get(page).text
    response = session.post(
        page,
        data={
            "form": "domain",
            "requests_per_minute": "40",
            "failure_mode": "open",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{pair.urls[0]}{page}"},
    )
    assert response.status_code == 302, response.text[:2000]
    changed = time.monotonic()
    # The documented delay: CUBEAI_LIMITS_CACHE_SECONDS (1 s for these servers).
    time.sleep(1.1)
    for gateway in (0, 1):
        answer = chat(pair, gateway, secret)
        assert answer.headers["x-ratelimit-limit-requests"] == "40"
    assert time.monotonic() - changed < 5
    committed(lambda: DomainLimits.objects.filter(domain_id=pair.domain_id).delete())


RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def test_a_stream_and_errors_after_admission_carry_the_ratelimit_headers(pair):
    secret, _ = new_token(pair, requests_per_minute=10, tokens_per_minute=5000)
    body = {
        "model": "limits-echo",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 5,
    }
    with httpx.stream(
        "POST",
        f"{pair.api(0)}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    ) as streamed:
        text = "".join(streamed.iter_text())
    assert streamed.status_code == 200 and "data: [DONE]" in text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert all(name in streamed.headers for name in RATE_HEADERS), dict(streamed.headers)
    assert streamed.headers["x-ratelimit-limit-requests"] == "10"
    assert streamed.headers["x-ratelimit-remaining-requests"] == "9"
    assert streamed.headers["x-ratelimit-limit-tokens"] == "5000"
    assert int(streamed.headers["x-ratelimit-remaining-tokens"]) < 5000  # reserved up front

    # A model the domain does not have: refused after admission, a 404 with the headers.
    unknown = chat(pair, 1, secret, model="no-such-model")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert all(name in unknown.headers for name in RATE_HEADERS), dict(unknown.headers)
    assert unknown.headers["x-ratelimit-remaining-requests"] == "8"

    # A capability the model lacks: a 400 naming the parameter, with the headers.
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    unsupported = chat(pair, 0, secret, tools=tools)
    assert unsupported.status_code == 400
    assert unsupported.json()["error"]["param"] == "tools"
    assert all(name in unsupported.headers for name in RATE_HEADERS), dict(unsupported.headers)
    assert unsupported.headers["x-ratelimit-remaining-requests"] == "7"


def test_a_spent_budget_answers_insufficient_quota_and_the_page_shows_100_percent(pair):
    secret, token_id = new_token(pair, monthly_token_budget=40)
    codes = []
    for index in range(12):
        answer = chat(pair, index % 2, secret, max_tokens=5)
        codes.append(answer.status_code)
        if answer.status_code == 429:
            break
        time.sleep(0.2)  # the settlement follows the answer
    assert codes[-1] == 429, codes
    error = answer.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "monthly token budget" in error["message"]
    assert int(answer.headers["Retry-After"]) > 0
    # Still spent on the other server.
    assert chat(pair, len(codes) % 2, secret).json()["error"]["code"] == "insufficient_quota"
    session = _signed_in(pair.urls[1])
    rows = session.get(f"/api/domains/{pair.domain_id}/limits/tokens/").json()
    (row,) = [r for r in rows if r["token"] == token_id]
    assert row["budget"]["percent"] == 100.0 and row["budget"]["remaining"] == 0
    # The usage page shows the spent budget as 100 %.
    html = session.get(f"/domains/{pair.domain_id}/usage/").text
    panel = html[html.index('id="usage-budgets"') :]
    spent = re.search(
        rf"<span>Your token “{row['token_name']}”</span>\s*"
        r"<strong>0 left</strong><small>(\d+) of 40 used \(100.0 %\)</small>",
        panel,
    )
    assert spent and int(spent.group(1)) >= 40, panel[:1500]
    # The 80 % warning was recorded once, off the request path.
    deadline = time.monotonic() + 10
    while True:
        warnings = committed(
            lambda: list(
                AuditEvent.objects.filter(
                    domain_id=pair.domain_id, action="quota.warning", target=f"token {token_id}"
                ).values("details")
            )
        )
        if warnings or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(warnings) == 1
    assert warnings[0]["details"]["budget"] == 40 and warnings[0]["details"]["used"] >= 32


def test_budgets_and_usage_rows_equal_the_backends_usage_for_a_mixed_run(pair):
    from limits import selectors

    secret, token_id = new_token(pair)
    ids = []

    def send(index: int) -> int:
        request_id = f"req-mixed-{uuid.uuid4().hex[:10]}"
        ids.append(request_id)
        kind = index % 3
        extra = {}
        if kind == 1:
            extra = {"stream": True, "stream_options": {"include_usage": True}}
        if kind == 2:
            extra = {"stream": True}  # no usage asked for: the backend still reports it
        body = {"model": "limits-echo", "messages": [{"role": "user", "content": "hi"}], **extra}
        with httpx.stream(
            "POST",
            f"{pair.api(index % 2)}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {secret}", "x-request-id": request_id},
            timeout=30,
        ) as response:
            text = response.read().decode()
        assert response.status_code == 200, text
        if kind == 0:
            return json.loads(text)["usage"]["total_tokens"]
        if kind == 1:
            events = [json.loads(line[6:]) for line in text.splitlines() if line[6:7] == "{"]
            return [e for e in events if e.get("usage")][-1]["usage"]["total_tokens"]
        # The fake backend reports 11 tokens for every stream.
        assert '"usage"' not in text
        return 11

    expected = sum(send(index) for index in range(9))
    assert expected == 3 * 8 + 6 * 11
    rows = [row for request_id in ids for row in usage_rows(request_id)]
    assert len(rows) == 9
    assert sum(row["total_tokens"] for row in rows) == expected
    assert {row["usage_source"] for row in rows} == {"backend"}
    # The token's budget counter (shared by both servers) saw exactly the same.
    deadline = time.monotonic() + 5
    while selectors.budget_used(pair.domain_id, token_id) != expected:
        assert time.monotonic() < deadline, selectors.budget_used(pair.domain_id, token_id)
        time.sleep(0.1)


def test_metrics_add_up_both_servers_and_need_the_credential(pair):
    secret, _ = new_token(pair)
    for index in range(4):
        assert chat(pair, index % 2, secret).status_code == 200
    unknown = chat(pair, 0, secret, model="a#s-fuzzed-name")
    assert unknown.status_code == 404
    assert httpx.get(f"{pair.urls[0]}/metrics").status_code == 403
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{pair.urls[0]}/metrics", headers=wrong).status_code == 403
    text = httpx.get(
        f"{pair.urls[1]}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "cubeai_requests",
        "cubeai_request_duration_seconds",
        "cubeai_streams_in_flight",
        "cubeai_upstream_duration_seconds",
        "cubeai_guardrails_duration_seconds",
        "cubeai_limit_rejections",
        "cubeai_breaker_open",
    ):
        assert name in families, sorted(families)
    requests = {
        (s.labels["endpoint"], s.labels["model"], s.labels["status"]): s.value
        for s in families["cubeai_requests"].samples
        if s.name == "cubeai_requests_total"
    }
    models = {model for _, model, _ in requests}
    assert models <= {"limits-echo", "limits-slow", "unknown"}, models
    assert requests[("chat.completions", "unknown", "404")] >= 1
    # Both processes' requests are counted (earlier tests sent many to each).
    assert requests[("chat.completions", "limits-echo", "200")] >= 4 + 9
    rejections = {
        (s.labels["limit"], s.labels["scope"]): s.value
        for s in families["cubeai_limit_rejections"].samples
        if s.name == "cubeai_limit_rejections_total"
    }
    assert rejections.get(("requests_per_minute", "token"), 0) >= 1
    assert rejections.get(("monthly_budget", "token"), 0) >= 1
    breakers = {s.labels["backend"]: s.value for s in families["cubeai_breaker_open"].samples}
    assert breakers.get("limits-fake") == 0


def test_each_call_is_one_json_log_line_without_secrets_or_content(pair):
    secret, token_id = new_token(pair)
    request_id = f"req-log-{uuid.uuid4().hex[:10]}"
    body = {"model": "limits-echo", "messages": [{"role": "user", "content": "zebra-prompt"}]}
    answer = httpx.post(
        f"{pair.api(0)}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}", "x-request-id": request_id},
        timeout=30,
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 5
    while request_id not in Path(pair.logs[0]).read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    text = Path(pair.logs[0]).read_text()
    (line,) = [line for line in text.splitlines() if request_id in line]
    entry = json.loads(line)
    assert entry["request_id"] == request_id
    assert entry["domain"] == pair.domain_id and entry["token_id"] == token_id
    assert entry["model"] == "limits-echo" and entry["backend"] == "limits-fake"
    assert entry["status"] == 200 and entry["latency_ms"] > 0
    assert entry["upstream_ms"] is not None and entry["guardrails_ms"] is not None
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (5, 3)  # the backend's
    assert secret not in text and "zebra-prompt" not in text and "echo:" not in text
    assert committed(lambda: Token.objects.filter(pk=token_id).exists())
