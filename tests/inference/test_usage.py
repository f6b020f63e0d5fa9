"""Usage: members see their own tokens' usage, admins and viewers the domain's; no content."""

import pytest
from django.utils import timezone

from domains import permissions
from domains.models import Membership, Role
from inference import metering
from inference.models import Model


def event(domain, user, *, model="chat-a", status=200, tokens=10, token_id=1, when=None):
    """One usage event written the way the gateway's metering flush writes it."""
    metering.write(
        [
            dict(
                domain_id=domain.pk,
                user_id=user.pk,
                token_id=token_id,
                request_id="req_1",
                endpoint="chat.completions",
                model=model,
                status=status,
                prompt_tokens=tokens // 2,
                completion_tokens=tokens - tokens // 2,
                total_tokens=tokens,
                latency_ms=12.5,
                created_at=when or timezone.now(),
            )
        ]
    )


@pytest.fixture
def models():
    for name in ("chat-a", "chat-b"):
        Model.objects.create(name=name, tasks=["chat"])


@pytest.fixture
def usage(domain, alice, bob, charlie, other_domain, models):
    event(domain, alice, tokens=10, token_id=1)
    event(domain, alice, model="chat-b", status=429, tokens=0, token_id=1)
    event(domain, bob, tokens=30, token_id=2)
    event(other_domain, charlie, tokens=1000, token_id=3)


def test_an_admin_sees_the_whole_domain(client, alice, usage):
    client.force_login(alice)
    body = client.get(f"/api/domains/{usage_domain(alice)}/usage/").json()
    assert body["scope"] == "domain"
    assert body["totals"]["requests"] == 3
    assert body["totals"]["errors"] == 1
    assert body["totals"]["total_tokens"] == 40
    assert {row["model"] for row in body["by_model"]} == {"chat-a", "chat-b"}


def test_a_viewer_sees_the_whole_domain(client, bob, usage):
    client.force_login(bob)
    body = client.get(f"/api/domains/{usage_domain(bob)}/usage/").json()
    assert body["scope"] == "domain" and body["totals"]["requests"] == 3


def test_a_member_sees_only_their_own_usage(client, bob, domain, usage):
    Membership.objects.filter(user=bob, domain=domain).update(
        role=Role.objects.get(domain=None, name=permissions.MEMBER)
    )
    client.force_login(bob)
    body = client.get(f"/api/domains/{domain.pk}/usage/?days=30").json()
    assert body["scope"] == "own"
    assert body["totals"] == {
        "requests": 1,
        "errors": 0,
        "prompt_tokens": 15,
        "completion_tokens": 15,
        "total_tokens": 30,
        "avg_latency_ms": 12.5,
        "p50_latency_ms": 25.0,
        "p95_latency_ms": 47.5,
    }
    page = client.get(f"/domains/{domain.pk}/usage/").content.decode()
    assert "Requests made with your tokens" in page


def test_the_page_shows_the_domains_usage(client, alice, domain, usage):
    client.force_login(alice)
    page = client.get(f"/domains/{domain.pk}/usage/?days=1").content.decode()
    assert "chat-a" in page and "chat-b" in page
    assert "All requests" in page


def test_an_invalid_period_is_a_field_error(client, alice, domain, usage):
    client.force_login(alice)
    response = client.get(f"/api/domains/{domain.pk}/usage/?days=3")
    assert response.status_code == 400 and "days" in response.json()


def test_a_token_with_usage_read_may_read_it(client, alice, domain, usage, pat):
    token = pat(alice, scopes=[permissions.USAGE_READ])
    response = client.get(f"/api/domains/{domain.pk}/usage/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200


def usage_domain(user):
    return Membership.objects.get(user=user, domain__route="alice-labs").domain_id
