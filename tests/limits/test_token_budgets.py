"""Token budgets: with a domain-wide per-token budget every token's remaining budget is
listed (page and API), and the 80 % warning names the token."""

import pytest
from asgiref.sync import async_to_sync

from domains.models import AuditEvent
from inference import metering
from limits import gate
from limits.models import DomainLimits, TokenLimits
from tokens.models import Token


@pytest.fixture(autouse=True)
def fresh(settings, tmp_path):
    settings.CUBEAI_LIMITS_SQLITE_PATH = str(tmp_path / "limits.sqlite3")
    gate._stores.clear()
    gate._cache.clear()
    yield
    gate._stores.clear()
    gate._cache.clear()


async def _charge(domain_id: str, token_id: int, tokens: int) -> None:
    ticket = await gate.admit(domain_id=domain_id, token_id=token_id, cost=tokens, stream=False)
    await gate.settle(ticket, total_tokens=tokens, domain_id=domain_id)


@pytest.fixture
def tokens(alice, bob, charlie, domain, other_domain, pat):
    pat(alice, name="ci")
    pat(bob, name="laptop", scopes=["usage:read"])
    pat(charlie, name="outsider")
    return {token.name: token for token in Token.objects.all()}


def test_a_per_token_default_budget_lists_every_tokens_remaining_budget(
    api, client, alice, domain, tokens
):
    DomainLimits.objects.create(domain=domain, token_monthly_token_budget=100)
    TokenLimits.objects.create(domain=domain, token=tokens["laptop"], requests_per_minute=5)
    async_to_sync(_charge)(str(domain.pk), tokens["ci"].pk, 30)
    api.force_login(alice)
    rows = {
        row["token_name"]: row for row in api.get(f"/api/domains/{domain.pk}/limits/tokens/").json()
    }
    # Charlie's token cannot act in alice's domain: not listed.
    assert set(rows) == {"ci", "laptop"}
    assert rows["ci"]["own_limits"] is False and rows["ci"]["requests_per_minute"] is None
    assert rows["ci"]["budget"] == {"budget": 100, "used": 30, "remaining": 70, "percent": 30.0}
    assert rows["laptop"]["own_limits"] is True and rows["laptop"]["requests_per_minute"] == 5
    assert rows["laptop"]["budget"]["remaining"] == 100
    client.force_login(alice)
    html = client.get(f"/domains/{domain.pk}/limits/").content.decode()
    table = html[html.index('id="token-limits"') :]
    assert f"ci (#{tokens['ci'].pk})" in table and "70 of 100 (30.0 % used)" in table
    assert f"laptop (#{tokens['laptop'].pk})" in table and "100 of 100 (0.0 % used)" in table


def test_without_a_per_token_budget_only_tokens_with_their_own_limits_are_listed(
    api, alice, domain, tokens
):
    TokenLimits.objects.create(domain=domain, token=tokens["laptop"], requests_per_minute=5)
    api.force_login(alice)
    rows = api.get(f"/api/domains/{domain.pk}/limits/tokens/").json()
    assert [row["token_name"] for row in rows] == ["laptop"]


def test_the_80_percent_warning_names_the_token(domain, tokens):
    DomainLimits.objects.create(domain=domain, token_monthly_token_budget=100)
    token = tokens["ci"]
    async_to_sync(_charge)(str(domain.pk), token.pk, 85)
    metering.write(metering.drain())
    (warning,) = AuditEvent.objects.filter(domain=domain, action="quota.warning")
    assert warning.target == f"token {token.pk}"
    assert warning.details["token_id"] == token.pk
    assert warning.details["token_name"] == "ci"
    assert warning.details["scope"] == "token" and warning.details["used"] == 85


def test_the_usage_page_shows_the_domain_budget_and_the_callers_token_budgets(
    client, alice, domain, tokens
):
    DomainLimits.objects.create(
        domain=domain, monthly_token_budget=1000, token_monthly_token_budget=100
    )
    async_to_sync(_charge)(str(domain.pk), tokens["ci"].pk, 60)
    client.force_login(alice)
    html = client.get(f"/domains/{domain.pk}/usage/").content.decode()
    panel = html[html.index('id="usage-budgets"') :]
    assert "<span>This domain</span>" in panel
    assert "<strong>940 left</strong><small>60 of 1000 used (6.0 %)</small>" in panel
    assert "<span>Your token “ci”</span>" in panel
    assert "<strong>40 left</strong><small>60 of 100 used (60.0 %)</small>" in panel
    # Bob's token is his, not the caller's.
    assert "laptop" not in panel
