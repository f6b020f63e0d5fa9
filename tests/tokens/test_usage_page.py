"""Profile → a token's usage: from the daily aggregates, across domains, the owner's only."""

import datetime
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


def _csv(response) -> list[dict]:
    import csv
    import io

    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_a_token_usage_exports_one_csv_row_per_day(client, alice, two_tokens_two_domains):
    laptop, _ = two_tokens_two_domains
    client.force_login(alice)
    response = client.get(f"/profile/tokens/{laptop.pk}/usage/export.csv?days=7")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    today = timezone.localdate()
    start = today - datetime.timedelta(days=6)
    assert (
        f'filename="usage-token-{laptop.pk}-{start}-{today}.csv"'
        in (response["Content-Disposition"])
    )
    rows = _csv(response)
    assert rows[0]["day"] == start.isoformat()
    assert len(rows) == 7
    last = rows[-1]
    # Both domains' requests of the laptop token, none of the ci token's.
    assert last["day"] == today.isoformat()
    assert (last["requests"], last["errors"], last["total_tokens"]) == ("8", "1", "130")
    assert (last["prompt_tokens"], last["completion_tokens"]) == ("65", "65")
    assert last["avg_latency_ms"] == "10.0"
    assert rows[0]["requests"] == "0"
    page = client.get(f"/profile/tokens/{laptop.pk}/usage/").content.decode()
    assert f'href="/profile/tokens/{laptop.pk}/usage/export.csv?start=' in page


def test_a_token_usage_export_refuses_a_bad_period_and_another_users_token(
    client, alice, bob, two_tokens_two_domains
):
    laptop, _ = two_tokens_two_domains
    client.force_login(alice)
    bad = client.get(
        f"/profile/tokens/{laptop.pk}/usage/export.csv?start=2026-02-10&end=2026-02-01"
    )
    assert bad.status_code == 400
    assert "end" in bad.content.decode()
    assert "The last day must not be before the first." in bad.content.decode()
    client.force_login(bob)
    assert client.get(f"/profile/tokens/{laptop.pk}/usage/export.csv").status_code == 404


def test_the_api_gives_a_token_usage_as_documented(api, alice, two_tokens_two_domains, domain):
    from tests.openapi import check_body

    laptop, _ = two_tokens_two_domains
    api.force_login(alice)
    response = api.get(f"/api/tokens/{laptop.pk}/usage/?days=30")
    assert response.status_code == 200
    body = response.json()
    assert (body["scope"], body["days"]) == ("token", 30)
    assert body["end"] == timezone.localdate().isoformat()
    assert (body["totals"]["requests"], body["totals"]["errors"]) == (8, 1)
    assert body["totals"]["total_tokens"] == 130
    assert len(body["series"]) == 30
    assert body["series"][-1]["requests"] == 8
    by_domain = {row["domain_name"]: row for row in body["by_domain"]}
    assert by_domain["Alice Labs"]["requests"] == 3
    assert by_domain["Alice Labs"]["domain_id"] == str(domain.pk)
    assert by_domain["Alice Two"]["total_tokens"] == 100
    assert [(row["model"], row["requests"]) for row in body["by_model"]] == [("chat-a", 8)]
    assert "by_token" not in body and "by_member" not in body
    document = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    check_body(document, "/api/tokens/{id}/usage/", "get", 200, body)


def test_the_token_usage_api_refuses_a_bad_period_another_users_token_and_a_token(
    api, alice, bob, pat, two_tokens_two_domains
):
    laptop, _ = two_tokens_two_domains
    api.force_login(alice)
    bad = api.get(f"/api/tokens/{laptop.pk}/usage/?start=2026-02-10&end=2026-02-01")
    assert bad.status_code == 400
    assert bad.json() == {"end": ["Must not be before `start`."]}
    assert api.get(f"/api/tokens/{laptop.pk}/usage/?days=5").json()["days"] == [
        '"5" is not a valid choice.'
    ]
    api.force_login(bob)
    assert api.get(f"/api/tokens/{laptop.pk}/usage/").status_code == 404
    api.logout()
    # Like every token operation of the API: a signed-in session only, never a token.
    secret = pat(alice, scopes=["usage:read"])
    refused = api.get(f"/api/tokens/{laptop.pk}/usage/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert refused.status_code == 403
    assert "session" in refused.json()["detail"]
