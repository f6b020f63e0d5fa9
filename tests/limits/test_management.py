"""Domain admins change limits on the page, through the management API and in the admin;
bad values are refused with field errors, and outsiders see nothing."""

import pytest

from domains.models import AuditEvent
from limits import gate
from limits.models import DomainLimits, TokenLimits
from tokens.models import Token


@pytest.fixture(autouse=True)
def fresh(settings, tmp_path):
    settings.CUBEAI_LIMITS_SQLITE_PATH = str(tmp_path / "limits.sqlite3")
    settings.CUBEAI_LIMITS_MAX_RPM = 10_000
    gate._stores.clear()
    gate._cache.clear()
    yield
    gate._stores.clear()
    gate._cache.clear()


def page(domain) -> str:
    return f"/domains/{domain.pk}/limits/"


def test_the_page_shows_the_limits_in_force_and_the_budget(client, alice, domain, settings):
    settings.CUBEAI_RATE_LIMIT_DOMAIN_RPM = 4321
    DomainLimits.objects.create(domain=domain, monthly_token_budget=1000)
    client.force_login(alice)
    html = client.get(page(domain)).content.decode()
    assert 'data-testid="domain-rpm">4321<' in html
    assert 'data-testid="budget-remaining">1000<' in html
    assert "Save limits" in html


async def _charge(domain_id: str, tokens: int) -> None:
    ticket = await gate.admit(domain_id=domain_id, token_id=1, cost=tokens, stream=False)
    await gate.settle(ticket, total_tokens=tokens, domain_id=domain_id)


def test_the_overview_shows_the_limits_and_the_remaining_budget(client, alice, domain, settings):
    from asgiref.sync import async_to_sync

    settings.CUBEAI_RATE_LIMIT_DOMAIN_RPM = 4321
    DomainLimits.objects.create(domain=domain, monthly_token_budget=1000)
    async_to_sync(_charge)(str(domain.pk), 250)
    client.force_login(alice)
    html = client.get(f"/domains/{domain.pk}/").content.decode()
    panel = html[html.index('id="overview-limits"') :]
    assert "<strong>4321</strong>" in panel
    assert "<strong>750 left</strong>" in panel
    assert "250 of 1000 used (25.0 %)" in panel
    assert page(domain) in html


def test_an_admin_lowers_the_domain_limit_on_the_page(client, alice, domain):
    client.force_login(alice)
    response = client.post(
        page(domain),
        {"form": "domain", "requests_per_minute": "7", "failure_mode": "closed"},
    )
    assert response.status_code == 302
    row = DomainLimits.objects.get(domain=domain)
    assert (row.requests_per_minute, row.failure_mode) == (7, "closed")
    assert gate.resolve(str(domain.pk), 1).domain_rpm == 7
    event = AuditEvent.objects.get(domain=domain, action="limits.changed")
    assert event.details["requests_per_minute"] == 7


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("requests_per_minute", "-5", "at least 1"),
        ("tokens_per_minute", "0", "at least 1"),
        ("token_concurrent_streams", "999999999", "at most"),
        ("monthly_token_budget", "99999999999999999999", "at most"),
        ("token_requests_per_minute", "ten", "whole number"),
    ],
)
def test_bad_values_are_refused_on_the_page_with_field_errors(
    client, alice, domain, field, value, message
):
    client.force_login(alice)
    response = client.post(page(domain), {"form": "domain", field: value, "failure_mode": "open"})
    assert response.status_code == 400
    errors = response.context["domain_form"].errors
    assert field in errors, errors
    assert message in " ".join(errors[field]) or "whole number" in " ".join(errors[field])
    assert not DomainLimits.objects.filter(domain=domain).exists()


def test_a_viewer_sees_the_page_but_cannot_change_it(client, bob, domain):
    client.force_login(bob)
    html = client.get(page(domain)).content.decode()
    assert "Limits and budget" in html and "Save limits" not in html
    response = client.post(page(domain), {"form": "domain", "requests_per_minute": "1"})
    assert response.status_code == 403
    assert not DomainLimits.objects.filter(domain=domain).exists()


def test_an_outsider_gets_404(client, charlie, domain, api):
    client.force_login(charlie)
    assert client.get(page(domain)).status_code == 404
    api.force_login(charlie)
    assert api.get(f"/api/domains/{domain.pk}/limits/").status_code == 404
    assert (
        api.patch(f"/api/domains/{domain.pk}/limits/", {"requests_per_minute": 1}, format="json")
    ).status_code == 404


def test_the_api_reads_and_changes_limits_with_field_errors(api, alice, domain):
    api.force_login(alice)
    url = f"/api/domains/{domain.pk}/limits/"
    response = api.patch(
        url,
        {"tokens_per_minute": 5000, "monthly_token_budget": 100000, "failure_mode": "closed"},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["effective"]["tokens_per_minute"] == 5000
    assert body["configured"]["failure_mode"] == "closed"
    assert body["budget"] == {"budget": 100000, "used": 0, "remaining": 100000, "percent": 0.0}
    bad = api.patch(
        url,
        {"requests_per_minute": -1, "token_tokens_per_minute": 10**15, "failure_mode": "maybe"},
        format="json",
    )
    assert bad.status_code == 400
    errors = bad.json()
    assert "failure_mode" in errors  # the serializer's choice check comes first
    bad = api.patch(
        url, {"requests_per_minute": -1, "token_tokens_per_minute": 10**15}, format="json"
    )
    assert bad.status_code == 400
    assert set(bad.json()) == {"requests_per_minute", "token_tokens_per_minute"}
    assert DomainLimits.objects.get(domain=domain).requests_per_minute is None


def test_the_api_sets_one_tokens_limits(api, alice, charlie, domain, other_domain, pat):
    pat(alice, name="ci")
    token = Token.objects.get(owner=alice, name="ci")
    api.force_login(alice)
    url = f"/api/domains/{domain.pk}/limits/tokens/{token.pk}/"
    response = api.put(url, {"requests_per_minute": 3, "concurrent_streams": 2}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["token_name"] == "ci"
    assert gate.resolve(str(domain.pk), token.pk).token_rpm == 3
    assert gate.resolve(str(domain.pk), token.pk).token_streams == 2
    bad = api.put(url, {"monthly_token_budget": 0}, format="json")
    assert bad.status_code == 400 and "monthly_token_budget" in bad.json()
    # Another domain's member's token is not one of this domain's.
    pat(charlie, name="theirs")
    theirs = Token.objects.get(owner=charlie, name="theirs")
    other = api.put(f"/api/domains/{domain.pk}/limits/tokens/{theirs.pk}/", {}, format="json")
    assert other.status_code == 400 and "token" in other.json()
    assert api.delete(url).status_code == 204
    assert not TokenLimits.objects.filter(token=token).exists()


def test_staff_edit_limits_in_the_admin_with_the_same_validation(client, domain, django_user_model):
    staff = django_user_model.objects.create_superuser("ops@example.com", "pw-ops-123456")
    client.force_login(staff)
    response = client.post(
        "/admin/limits/domainlimits/add/",
        {"domain": str(domain.pk), "requests_per_minute": "0", "failure_mode": "open"},
    )
    assert response.status_code == 200
    assert "at least 1" in response.content.decode()
    assert not DomainLimits.objects.exists()


def test_the_management_api_schema_documents_the_limits_endpoints(client):
    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]
    assert "patch" in paths["/api/domains/{domain_id}/limits/"]
    assert "put" in paths["/api/domains/{domain_id}/limits/tokens/{token_id}/"]


def test_the_grafana_dashboard_queries_the_metrics_series():
    import json
    from pathlib import Path

    from django.conf import settings

    dashboard = json.loads((Path(settings.BASE_DIR) / "deploy/grafana-dashboard.json").read_text())
    queries = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for series in (
        "cubeai_requests_total",
        "cubeai_request_duration_seconds_bucket",
        "cubeai_streams_in_flight",
        "cubeai_upstream_duration_seconds_bucket",
        "cubeai_guardrails_duration_seconds_bucket",
        "cubeai_limit_rejections_total",
        "cubeai_breaker_open",
        "cubeai_jobs_total",
        "cubeai_job_duration_seconds_bucket",
    ):
        assert series in queries, series


@pytest.fixture
def limited(alice, bob, domain, pat):
    """Bob is a plain member; alice's "alices-ci" and bob's "bobs-ci" have limits of their
    own, and bob's "bobs-other" falls under the domain's per-token monthly budget."""
    from domains import permissions
    from domains.models import Membership, Role

    Membership.objects.filter(user=bob, domain=domain).update(
        role=Role.objects.get(domain=None, name=permissions.MEMBER)
    )
    for owner, name in ((alice, "alices-ci"), (bob, "bobs-ci"), (bob, "bobs-other")):
        pat(owner, name=name)
    tokens = {token.name: token for token in Token.objects.all()}
    TokenLimits.objects.create(domain=domain, token=tokens["alices-ci"], requests_per_minute=7)
    TokenLimits.objects.create(domain=domain, token=tokens["bobs-ci"], requests_per_minute=9)
    DomainLimits.objects.create(domain=domain, token_monthly_token_budget=5000)
    return tokens


def test_a_member_sees_only_their_own_tokens_limits_on_the_page(client, bob, domain, limited):
    client.force_login(bob)
    html = client.get(page(domain)).content.decode()
    assert f'data-token="{limited["bobs-ci"].pk}"' in html
    assert f'data-token="{limited["bobs-other"].pk}"' in html
    assert "alices-ci" not in html
    assert f'data-token="{limited["alices-ci"].pk}"' not in html


def test_a_member_reads_only_their_own_tokens_limits_through_the_api(
    client, bob, domain, limited, pat
):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {pat(bob, scopes=['usage:read'], name='reader')}"}
    url = f"/api/domains/{domain.pk}/limits/tokens/"
    rows = client.get(url, **auth).json()
    assert [(row["token_name"], row["own_limits"], row["requests_per_minute"]) for row in rows] == [
        ("bobs-ci", True, 9),
        ("bobs-other", False, None),
        ("reader", False, None),
    ]
    assert all(row["budget"]["budget"] == 5000 for row in rows)
    mine = client.get(f"{url}{limited['bobs-ci'].pk}/", **auth)
    assert mine.json()["requests_per_minute"] == 9
    theirs = client.get(f"{url}{limited['alices-ci'].pk}/", **auth)
    assert theirs.status_code == 404
    assert "alices-ci" not in theirs.content.decode() and "7" not in str(theirs.json())


def test_an_admin_reads_every_tokens_limits(api, alice, domain, limited):
    api.force_login(alice)
    rows = api.get(f"/api/domains/{domain.pk}/limits/tokens/").json()
    assert {row["token_name"] for row in rows} == {"alices-ci", "bobs-ci", "bobs-other"}
    detail = api.get(f"/api/domains/{domain.pk}/limits/tokens/{limited['bobs-ci'].pk}/")
    assert detail.json()["requests_per_minute"] == 9
