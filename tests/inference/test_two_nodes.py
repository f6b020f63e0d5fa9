"""Two web processes against one PostgreSQL and Redis, as in a scaled-out deployment
(deploy/README.md): rate limits, revocation, usage and routing hold across them.

Runs on the PostgreSQL + Redis leg only (`DATABASE_URL` and `REDIS_URL` set): on the embedded
defaults each process has its own in-memory cache and limiter, which is the documented
single-node setup.
"""

import datetime
import time
import uuid

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from domains import permissions
from domains.models import User
from inference.models import Model
from tests.conftest import _stop
from tests.inference.conftest import committed, start_gateway, usage_row
from tokens import services as token_services
from tokens.models import Token

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db,
    pytest.mark.skipif(
        not settings.REDIS_URL or connection.vendor != "postgresql",
        reason="needs the PostgreSQL + Redis leg (DATABASE_URL and REDIS_URL)",
    ),
]

LIMIT = 10  # requests per minute per token, shared by the nodes through Redis
DELAY = 2 + 1.5  # the documented delays (2 s) and slack for a loaded machine


@pytest.fixture(scope="module")
def nodes(stack, django_db_blocker, tmp_path_factory):
    started = []
    with django_db_blocker.unblock():
        for name in ("node-a", "node-b"):
            process, url = start_gateway(
                tmp_path_factory.mktemp(name),
                CUBEAI_RATE_LIMIT_TOKEN_RPM=str(LIMIT),
            )
            started.append((process, url))
    yield [url for _, url in started]
    for process, _ in started:
        _stop(process)
    with django_db_blocker.unblock():
        Model.objects.filter(name__startswith="nodes-").delete()


def issue_token():
    def issue():
        owner = User.objects.get(email="e2e-alice@example.com")
        expires = timezone.now() + datetime.timedelta(days=1)
        return token_services.token_issue(
            owner=owner, name="nodes", scopes=sorted(permissions.ALL), expires_at=expires
        )

    return committed(issue)


def chat(url: str, stack, token: str, request_id: str = "") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if request_id:
        headers["x-request-id"] = request_id
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{url}/proxy/{stack.alpha.pk}/v1/chat/completions", json=body, headers=headers, timeout=30
    )


def test_the_rate_limit_is_shared_by_the_nodes(nodes, stack):
    _, token = issue_token()
    statuses = [chat(nodes[i % 2], stack, token).status_code for i in range(LIMIT + 4)]
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(429) == 4, statuses


def test_usage_from_both_nodes_is_written(nodes, stack):
    _, token = issue_token()
    ids = [f"req-node-{n}-{uuid.uuid4().hex[:8]}" for n in range(2)]
    for url, request_id in zip(nodes, ids, strict=True):
        assert chat(url, stack, token, request_id).status_code == 200
    for request_id in ids:
        assert usage_row(request_id)["status"] == 200


def test_a_revocation_holds_on_every_node_within_its_delay(nodes, stack):
    row, token = issue_token()
    assert all(chat(url, stack, token).status_code == 200 for url in nodes)
    committed(lambda: token_services.token_revoke(token=Token.objects.get(pk=row.pk)))
    time.sleep(DELAY)
    assert [chat(url, stack, token).status_code for url in nodes] == [401, 401]


def test_a_new_model_is_routed_by_every_node_within_its_delay(nodes, stack):
    _, token = issue_token()

    def create():
        from inference.models import Backend

        model = Model.objects.create(name="nodes-echo", tasks=["chat"])
        model.deployments.create(
            backend=Backend.objects.get(name="e2e-fake-ok"), upstream_model="echo"
        )

    committed(create)
    time.sleep(DELAY)
    body = {"model": "nodes-echo", "messages": [{"role": "user", "content": "hi"}]}
    for url in nodes:
        response = httpx.post(
            f"{url}/proxy/{stack.alpha.pk}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
