"""In one process: the request path writes nothing to the database for usage, limits or
audit; a Redis outage follows each domain's failure mode and loses no budget charge;
`/metrics` is protected and parses; Celery jobs are counted through the signals."""

import datetime
import os
import signal
import subprocess
import time
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from domains import permissions, services
from domains.models import User
from inference import metering
from inference.models import Backend, Deployment, Model
from inference.registry import registry
from limits import gate
from limits.models import DomainLimits
from tests.inference.conftest import free_port
from tokens import services as token_services


@pytest.fixture
def fresh(settings, tmp_path):
    settings.CUBEAI_LIMITS_SQLITE_PATH = str(tmp_path / "limits.sqlite3")
    settings.CUBEAI_ROUTING_REFRESH_SECONDS = 0
    settings.CUBEAI_AUTH_CACHE_SECONDS = 0
    settings.CUBEAI_LIMITS_CACHE_SECONDS = 0
    gate._stores.clear()
    gate._cache.clear()
    gate._pending.clear()
    metering.drain()
    yield
    gate._stores.clear()
    gate._cache.clear()
    gate._pending.clear()
    registry.snapshot = None


@pytest.fixture
def served(fresh, fake_upstream_url, db):
    owner = User.objects.create_user("path-owner@example.com", "pw-owner-123456")
    domain = services.domain_create(creator=owner, name="Path", route="path")
    fake = Backend.objects.create(
        name="path-fake", base_url=f"{fake_upstream_url}/v1", kind="openai",
        allow_not_confidential=True,
    )  # fmt: skip
    model = Model.objects.create(name="path-echo", tasks=["chat"], context_length=2048)
    Deployment.objects.create(model=model, backend=fake, upstream_model="echo")
    _, secret = token_services.token_issue(
        owner=owner,
        name="path",
        scopes=sorted(permissions.ALL),
        domains=None,
        expires_at=timezone.now() + datetime.timedelta(days=1),
    )
    return domain, secret


def ask(client, domain, secret, **extra):
    return client.post(
        f"/proxy/{domain.pk}/v1/chat/completions",
        {"model": "path-echo", "messages": [{"role": "user", "content": "hi"}], **extra},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )


def test_the_model_list_counts_one_request_no_tokens_and_carries_the_headers(client, served):
    domain, secret = served
    DomainLimits.objects.create(
        domain=domain, token_requests_per_minute=4, token_tokens_per_minute=1000,
        monthly_token_budget=1,
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {secret}"}
    listed = client.get(f"/proxy/{domain.pk}/v1/models", headers=auth)
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == ["path-echo"]
    assert listed.headers["x-ratelimit-limit-requests"] == "4"
    assert listed.headers["x-ratelimit-remaining-requests"] == "3"
    assert listed.headers["x-ratelimit-limit-tokens"] == "1000"
    assert listed.headers["x-ratelimit-remaining-tokens"] == "1000"  # no token charged
    one = client.get(f"/proxy/{domain.pk}/v1/models/path-echo", headers=auth)
    assert one.json()["id"] == "path-echo"
    assert one.headers["x-ratelimit-remaining-requests"] == "2"
    # A call spends the monthly budget of one token (a refused call is charged nothing)...
    assert ask(client, domain, secret, max_tokens=5).status_code == 200
    assert ask(client, domain, secret).json()["error"]["code"] == "insufficient_quota"
    # ...and the models are still listed, until the request limit, which the list shares
    # with every call, is reached.
    last = client.get(f"/proxy/{domain.pk}/v1/models", headers=auth)
    assert last.status_code == 200
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    refused = client.get(f"/proxy/{domain.pk}/v1/models", headers=auth)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["limit"] == "requests_per_minute"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


WATCHED = ("inference_usageevent", "domains_auditevent", "limits_")


def test_the_request_path_writes_no_usage_limits_or_audit_rows(client, served):
    domain, secret = served
    DomainLimits.objects.create(domain=domain, monthly_token_budget=10, failure_mode="open")
    # The token's first use is recorded once (last used); each call reserves 1 + 5 tokens.
    ask(client, domain, secret, max_tokens=5)
    with CaptureQueriesContext(connection) as queries:
        answer = ask(client, domain, secret, max_tokens=5)
        refused = ask(client, domain, secret, max_tokens=5)  # the budget is spent: 429
    assert answer.status_code == 200, answer.content
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].split()[0].upper() in ("INSERT", "UPDATE", "DELETE")
    ]
    assert not [sql for sql in writes if any(table in sql for table in WATCHED)], writes
    # Both calls are buffered, to be written off the request path.
    buffered = metering.drain()
    assert [e["status"] for e in buffered][-2:] == [200, 429]


@pytest.fixture
def redis_server(tmp_path):
    """A Redis of this test alone, to pause (SIGSTOP: unreachable, data kept) and resume."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield process, f"redis://127.0.0.1:{port}/0"
    os.kill(process.pid, signal.SIGCONT)
    process.terminate()
    process.wait(10)


async def admit(domain_id: str, cost: int = 10):
    return await gate.admit(domain_id=domain_id, token_id=1, cost=cost, stream=False)


@pytest.mark.django_db(transaction=True)
async def test_a_redis_outage_follows_each_domains_mode_and_loses_no_budget_charge(
    fresh, redis_server, settings
):
    from asgiref.sync import sync_to_async

    process, url = redis_server
    settings.REDIS_URL = url
    settings.CUBEAI_LIMITS_REDIS_TIMEOUT_SECONDS = 0.3
    gate._stores.clear()

    def make():
        owner = User.objects.create_user(f"{uuid.uuid4().hex[:8]}@example.com", "pw-1234567890")
        open_ = services.domain_create(
            creator=owner, name="Open", route=f"o-{uuid.uuid4().hex[:8]}"
        )
        closed = services.domain_create(
            creator=owner, name="Closed", route=f"c-{uuid.uuid4().hex[:8]}"
        )
        DomainLimits.objects.create(domain=open_, monthly_token_budget=10_000, failure_mode="open")
        DomainLimits.objects.create(domain=closed, failure_mode="closed")
        return str(open_.pk), str(closed.pk)

    open_id, closed_id = await sync_to_async(make)()
    first = await admit(open_id)
    await gate.settle(first, total_tokens=100, domain_id=open_id)
    await gate.settle(await admit(closed_id), total_tokens=1, domain_id=closed_id)
    assert await gate.budget_used(open_id) == 100
    before = await admit(open_id)  # reserves 10 in Redis; ends during the outage

    os.kill(process.pid, signal.SIGSTOP)  # Redis stops answering, mid-run
    try:
        during = await admit(open_id)  # fail open: local limits, still the headers
        assert during.headers["x-ratelimit-limit-requests"]
        with pytest.raises(gate.LimitsUnavailable) as caught:
            await admit(closed_id)
        assert caught.value.status == 503 and caught.value.code == "limits_unavailable"
        retry = str(settings.CUBEAI_LIMITS_UNAVAILABLE_RETRY_SECONDS)
        assert caught.value.headers["Retry-After"] == retry
        await gate.settle(before, total_tokens=40, domain_id=open_id)
        await gate.settle(during, total_tokens=50, domain_id=open_id)
        assert await gate.budget_used(open_id) is None  # unreachable
    finally:
        os.kill(process.pid, signal.SIGCONT)
    # Redis answers again: the next call replays what it missed.
    await admit(closed_id)
    assert not gate._pending
    # Nothing is lost: 100 before, 40 and 50 from the calls that ended during the outage.
    # A paused Redis still runs the commands that timed out once it resumes, so the calls
    # caught in flight may be charged again (10 reserved, 30 settled): never less.
    used = await gate.budget_used(open_id)
    assert 100 + 40 + 50 <= used <= 100 + 40 + 50 + 10 + 30


def test_a_fail_closed_domain_answers_503_in_openais_envelope(client, served, settings):
    domain, secret = served
    DomainLimits.objects.create(domain=domain, failure_mode="closed")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    gate._stores.clear()
    answer = ask(client, domain, secret)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "limits_unavailable"
    assert answer.json()["error"]["type"] == "server_error"
    assert answer.headers["Retry-After"] == str(settings.CUBEAI_LIMITS_UNAVAILABLE_RETRY_SECONDS)
    assert answer.headers["x-request-id"]
    DomainLimits.objects.filter(domain=domain).update(failure_mode="open")
    gate._cache.clear()
    answer = ask(client, domain, secret)
    assert answer.status_code == 200  # fail open: served on local limits
    assert answer.headers["x-ratelimit-limit-requests"]


def test_metrics_are_refused_without_the_credential_and_parse_with_it(client, settings):
    settings.CUBEAI_METRICS_TOKEN = ""
    settings.CUBEAI_METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 404  # off unless configured
    settings.CUBEAI_METRICS_TOKEN = "a-long-metrics-token-0123456789"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    answer = client.get(
        "/metrics", headers={"Authorization": "Bearer a-long-metrics-token-0123456789"}
    )
    assert answer.status_code == 200
    names = {f.name for f in text_string_to_metric_families(answer.content.decode())}
    assert {
        "cubeai_requests",
        "cubeai_jobs",
        "cubeai_job_duration_seconds",
        "cubeai_event_loop_tasks",
    } <= names
    settings.CUBEAI_METRICS_TOKEN = ""
    settings.CUBEAI_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403  # the test client is 127.0.0.1
    settings.CUBEAI_METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert client.get("/metrics").status_code == 200


def test_celery_jobs_are_counted_by_state_through_the_signals(db):
    from cubeai.celery import app
    from cubeai.metrics import connect_celery_signals

    connect_celery_signals()

    @app.task(name="tests.limits.boom")
    def boom():
        raise RuntimeError("boom")

    @app.task(name="tests.limits.fine")
    def fine():
        return 1

    def value(task, state):
        labels = {"task": task, "state": state}
        return REGISTRY.get_sample_value("cubeai_jobs_total", labels) or 0

    before = value("tests.limits.fine", "success"), value("tests.limits.boom", "failure")
    fine.apply()
    boom.apply()
    assert value("tests.limits.fine", "success") == before[0] + 1
    assert value("tests.limits.boom", "failure") == before[1] + 1
    count = REGISTRY.get_sample_value(
        "cubeai_job_duration_seconds_count", {"task": "tests.limits.fine"}
    )
    assert count and count >= 1
