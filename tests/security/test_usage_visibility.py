"""Usage visibility (finding: a member whose token held only `usage:read` read the whole
domain's usage, other members' token ids included, because the narrowed rights no longer
held an inference right and so looked like a viewer's).

Whose usage a reader sees is decided by their role (`inference.selectors.usage_reader`):
members their own tokens', admins and viewers the whole domain's, whatever the token.
"""

import pytest
from django.utils import timezone

from domains import permissions
from domains.models import Membership, Role
from inference import metering
from inference.models import Model


def event(domain, user, *, token_id: int, tokens: int, model: str = "chat-a") -> None:
    """One request's usage, written as the metering flush writes it (rows and aggregates)."""
    metering.write(
        [
            dict(
                domain_id=domain.pk,
                user_id=user.pk,
                token_id=token_id,
                request_id=f"req_{token_id}_{tokens}",
                endpoint="chat.completions",
                model=model,
                status=200,
                prompt_tokens=tokens // 2,
                completion_tokens=tokens - tokens // 2,
                total_tokens=tokens,
                latency_ms=10.0,
                created_at=timezone.now(),
            )
        ]
    )


@pytest.fixture
def usage(domain, alice, bob):
    """Alice (admin) used token 101 for 10 tokens; bob, a member here, token 202 for 30."""
    Membership.objects.filter(user=bob, domain=domain).update(
        role=Role.objects.get(domain=None, name=permissions.MEMBER)
    )
    for name in ("alices-model", "chat-a"):
        Model.objects.create(name=name, tasks=["chat"])
    event(domain, alice, token_id=101, tokens=10, model="alices-model")
    event(domain, bob, token_id=202, tokens=30)
    return domain


def read(client, domain, token):
    response = client.get(
        f"/api/domains/{domain.pk}/usage/?days=30", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 200
    return response.json()


def test_a_members_usage_read_token_sees_only_their_own_rows(client, bob, usage, pat):
    body = read(client, usage, pat(bob, scopes=[permissions.USAGE_READ]))
    assert body["scope"] == "own"
    fields = ("token_id", "requests", "errors", "prompt_tokens", "completion_tokens")
    assert [{k: row[k] for k in (*fields, "total_tokens")} for row in body["by_token"]] == [
        {
            "token_id": 202,
            "requests": 1,
            "errors": 0,
            "prompt_tokens": 15,
            "completion_tokens": 15,
            "total_tokens": 30,
        }
    ]
    assert [row["model"] for row in body["by_model"]] == ["chat-a"]
    assert body["totals"]["requests"] == 1 and body["totals"]["total_tokens"] == 30


def test_a_members_full_token_and_session_see_the_same(client, bob, usage, pat):
    body = read(client, usage, pat(bob))
    assert [row["token_id"] for row in body["by_token"]] == [202]
    client.force_login(bob)
    page = client.get(f"/domains/{usage.pk}/usage/?days=30").content.decode()
    assert "alices-model" not in page and "Requests made with your tokens" in page


def test_an_admins_usage_read_token_sees_the_whole_domain(client, alice, usage, pat):
    body = read(client, usage, pat(alice, scopes=[permissions.USAGE_READ]))
    assert body["scope"] == "domain"
    assert sorted(row["token_id"] for row in body["by_token"]) == [101, 202]
    assert body["totals"]["total_tokens"] == 40


def test_a_viewer_sees_the_whole_domain(client, bob, alice, usage, pat):
    Membership.objects.filter(user=bob, domain=usage).update(
        role=Role.objects.get(domain=None, name=permissions.VIEWER)
    )
    body = read(client, usage, pat(bob, scopes=[permissions.USAGE_READ]))
    assert sorted(row["token_id"] for row in body["by_token"]) == [101, 202]
