"""Profile → a token's usage: from the daily aggregates, across domains, the owner's only."""

import re

import pytest
from django.utils import timezone

from domains import services as domain_services
from inference.models import Model, UsageDaily
from tokens.models import Token


def _token(owner, pat, name):
    pat(owner, name=name)
    return Token.objects.get(owner=owner, name=name)


def _day(domain, token, *, model="chat-a", requests, tokens, errors=0, user=None):
    UsageDaily.objects.create(
        domain=domain,
        day=timezone.localdate(),
        model=model,
        token_id=token.pk,
        user_id=(user or token.owner).pk,
        requests=requests,
        errors=errors,
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
        total_tokens=tokens,
        latency_ms_sum=10.0 * requests,
    )


def _row(html: str, label: str) -> list[str]:
    """The cells of the table row whose first cell holds `label`, as text."""
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        cells = [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row for {label!r}")


@pytest.fixture
def two_tokens_two_domains(alice, domain, pat):
    Model.objects.create(name="chat-a", tasks=["chat"])
    second = domain_services.domain_create(creator=alice, name="Alice Two", route="alice-two")
    laptop, ci = _token(alice, pat, "laptop"), _token(alice, pat, "ci")
    _day(domain, laptop, requests=3, tokens=30, errors=1)
    _day(second, laptop, requests=5, tokens=100)
    _day(domain, ci, requests=7, tokens=700)
    _day(second, ci, requests=11, tokens=1100)
    return laptop, ci


def test_a_token_usage_page_shows_its_totals_and_one_row_per_domain(
    client, alice, two_tokens_two_domains
):
    laptop, _ = two_tokens_two_domains
    client.force_login(alice)
    response = client.get(f"/profile/tokens/{laptop.pk}/usage/?days=7")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Usage of “laptop”" in html
    totals = re.search(r"<caption[^>]*>Totals</caption>.*?<tbody><tr>(.*?)</tr>", html, re.S)
    cells = [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", totals.group(1))
    ]
    # Requests, errors, prompt, completion, total: the ci token's 18 requests are not here.
    assert cells[:5] == ["8", "1", "65", "65", "130"]
    alice_labs = _row(html, "Alice Labs")
    assert alice_labs[1] == "3" and alice_labs[3] == "1" and alice_labs[4] == "30"
    alice_two = _row(html, "Alice Two")
    assert alice_two[1] == "5" and alice_two[3] == "0" and alice_two[4] == "100"
    assert _row(html, "chat-a")[1] == "8"
    # The domain usage page's period picker and charts.
    assert 'class="period"' in html and 'id="usage-charts"' in html and "<svg" in html


def test_the_token_list_links_to_each_token_usage(client, alice, two_tokens_two_domains):
    laptop, ci = two_tokens_two_domains
    client.force_login(alice)
    html = client.get("/profile/tokens/").content.decode()
    assert f'href="/profile/tokens/{laptop.pk}/usage/"' in html
    assert f'href="/profile/tokens/{ci.pk}/usage/"' in html


def test_a_bad_period_is_a_field_error(client, alice, two_tokens_two_domains):
    laptop, _ = two_tokens_two_domains
    client.force_login(alice)
    response = client.get(f"/profile/tokens/{laptop.pk}/usage/?start=2026-02-10&end=2026-02-01")
    assert response.status_code == 400
    assert "The last day must not be before the first." in response.content.decode()


def test_another_users_token_usage_is_a_404(client, bob, two_tokens_two_domains):
    laptop, _ = two_tokens_two_domains
    client.force_login(bob)
    assert client.get(f"/profile/tokens/{laptop.pk}/usage/").status_code == 404
