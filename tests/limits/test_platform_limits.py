"""Staff set the platform's maxima and defaults in the admin (one row over the settings):
a lowered maximum refuses a domain admin's higher value with a field error, a new default
is what the gate applies, and a default above its maximum is refused."""

import pytest

from limits import gate
from limits.models import DomainLimits, PlatformLimits
from limits.platform import platform_limits

ADMIN = "/admin/limits/platformlimits/"
EMPTY = {
    name: ""
    for name in (
        "max_requests_per_minute",
        "max_tokens_per_minute",
        "max_concurrent_streams",
        "max_monthly_token_budget",
        "domain_requests_per_minute",
        "domain_tokens_per_minute",
        "token_requests_per_minute",
        "token_tokens_per_minute",
        "token_concurrent_streams",
    )
}


@pytest.fixture(autouse=True)
def fresh(settings, tmp_path):
    settings.CUBEAI_LIMITS_SQLITE_PATH = str(tmp_path / "limits.sqlite3")
    settings.CUBEAI_LIMITS_CACHE_SECONDS = 0
    settings.CUBEAI_AUTH_CACHE_SECONDS = 0
    settings.CUBEAI_LIMITS_MAX_RPM = 10_000
    settings.CUBEAI_RATE_LIMIT_TOKEN_RPM = 600
    settings.CUBEAI_RATE_LIMIT_DOMAIN_RPM = 6000
    gate._stores.clear()
    gate._cache.clear()
    yield
    gate._stores.clear()
    gate._cache.clear()


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("ops@example.com", "pw-ops-123456")
    client.force_login(user)
    return client


def test_a_lowered_maximum_refuses_a_domain_admins_higher_value(staff, api, alice, domain):
    api.force_login(alice)
    url = f"/api/domains/{domain.pk}/limits/"
    assert api.patch(url, {"requests_per_minute": 5000}, format="json").status_code == 200
    # The defaults too: the settings' (600 a token, 6000 a domain) are above the new maximum.
    lowered = {
        "max_requests_per_minute": "100",
        "domain_requests_per_minute": "100",
        "token_requests_per_minute": "50",
    }
    saved = staff.post(f"{ADMIN}add/", {**EMPTY, **lowered})
    assert saved.status_code == 302, saved.content.decode()
    assert platform_limits().max_requests_per_minute == 100
    refused = api.patch(url, {"requests_per_minute": 101}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {
        "requests_per_minute": ["Must be at most 100, the platform's maximum."]
    }
    # The page says the same, on the field.
    client = staff
    client.force_login(alice)
    page = client.post(
        f"/domains/{domain.pk}/limits/",
        {"requests_per_minute": "101", "failure_mode": "open"},
    )
    assert page.status_code == 400
    assert "Must be at most 100, the platform&#x27;s maximum." in page.content.decode()
    assert api.patch(url, {"requests_per_minute": 100}, format="json").status_code == 200
    # A value saved before the maximum was lowered is clamped to it by the gate.
    DomainLimits.objects.filter(domain=domain).update(requests_per_minute=5000)
    assert gate.resolve(str(domain.pk), 0).domain_rpm == 100


def test_the_gate_applies_the_platform_default_staff_set(staff, client, alice, domain, pat):
    token = pat(alice, domains=[domain])
    auth = {"Authorization": f"Bearer {token}"}
    before = client.get(f"/proxy/{domain.pk}/v1/models", headers=auth)
    assert before.headers["x-ratelimit-limit-requests"] == "600"  # CUBEAI_RATE_LIMIT_TOKEN_RPM
    saved = staff.post(f"{ADMIN}add/", {**EMPTY, "token_requests_per_minute": "3"})
    assert saved.status_code == 302, saved.content.decode()
    after = client.get(f"/proxy/{domain.pk}/v1/models", headers=auth)
    assert after.headers["x-ratelimit-limit-requests"] == "3"
    assert after.headers["x-ratelimit-remaining-requests"] == "1"  # 3, less both lists
    # A domain's own per-token value still beats the platform default.
    DomainLimits.objects.create(domain=domain, token_requests_per_minute=7)
    assert gate.resolve(str(domain.pk), 0).token_rpm == 7
    # Emptying the field returns to the setting.
    row = PlatformLimits.objects.get()
    changed = staff.post(f"{ADMIN}{row.pk}/change/", EMPTY)
    assert changed.status_code == 302, changed.content.decode()
    DomainLimits.objects.all().delete()
    assert gate.resolve(str(domain.pk), 0).token_rpm == 600


def test_a_default_above_its_maximum_or_below_one_is_refused(staff):
    response = staff.post(
        f"{ADMIN}add/",
        {**EMPTY, "max_requests_per_minute": "50", "max_concurrent_streams": "0"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    # The settings' defaults (600 per token, 6000 per domain) are above the new maximum.
    assert "The default (600) must not be above the maximum (50)" in html
    assert "The default (6000) must not be above the maximum (50)" in html
    assert "Ensure this value is greater than or equal to 1." in html
    assert not PlatformLimits.objects.exists()
    ok = staff.post(
        f"{ADMIN}add/",
        {
            **EMPTY,
            "max_requests_per_minute": "50",
            "domain_requests_per_minute": "50",
            "token_requests_per_minute": "10",
        },
    )
    assert ok.status_code == 302
    # One row: no second one can be added.
    assert staff.get(f"{ADMIN}add/").status_code == 403
    assert PlatformLimits.objects.get().pk == 1
