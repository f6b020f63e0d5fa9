"""The limits page's per-token form: tokens chosen by name among those that may act in the
domain, values validated with field errors, and a way to clear a token's own limits."""

import pytest

from domains.models import AuditEvent
from limits import gate
from limits.models import TokenLimits
from tokens.models import Token


@pytest.fixture(autouse=True)
def fresh(settings, tmp_path):
    settings.CUBEAI_LIMITS_SQLITE_PATH = str(tmp_path / "limits.sqlite3")
    gate._stores.clear()
    gate._cache.clear()
    yield
    gate._stores.clear()
    gate._cache.clear()


@pytest.fixture
def tokens(alice, bob, charlie, domain, other_domain, pat):
    pat(alice, name="ci")
    pat(bob, name="laptop", scopes=["usage:read"])
    pat(charlie, name="theirs")
    return {token.name: token for token in Token.objects.all()}


def page(domain) -> str:
    return f"/domains/{domain.pk}/limits/"


def post(client, domain, **data):
    return client.post(page(domain), {"form": "token", **data})


def test_the_form_offers_the_domains_tokens_by_name(client, alice, domain, tokens):
    client.force_login(alice)
    html = client.get(page(domain)).content.decode()
    form = html[html.index('value="token"') :]
    assert f'<option value="{tokens["ci"].pk}">ci (alice@example.com)</option>' in form
    assert f'<option value="{tokens["laptop"].pk}">laptop (bob@example.com)</option>' in form
    assert "theirs" not in form
    assert "Token id" not in html


def test_valid_values_are_saved_for_the_chosen_token(client, alice, domain, tokens):
    client.force_login(alice)
    token = tokens["laptop"]
    response = post(
        client, domain, token=token.pk, requests_per_minute="7", monthly_token_budget="5000"
    )
    assert response.status_code == 302
    row = TokenLimits.objects.get(domain=domain, token=token)
    assert (row.requests_per_minute, row.monthly_token_budget) == (7, 5000)
    assert row.tokens_per_minute is None and row.concurrent_streams is None
    html = client.get(page(domain)).content.decode()
    assert f"laptop (#{token.pk})" in html[html.index('id="token-limits"') :]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("requests_per_minute", "0", "Must be at least 1"),
        ("monthly_token_budget", "-5", "Must be at least 1"),
        ("concurrent_streams", "99999999", "at most"),
        ("tokens_per_minute", "lots", "Enter a whole number"),
    ],
)
def test_bad_values_are_field_errors(client, alice, domain, tokens, field, value, message):
    client.force_login(alice)
    response = post(client, domain, token=tokens["ci"].pk, **{field: value})
    assert response.status_code == 400
    errors = response.context["token_form"].errors
    assert message in " ".join(errors[field]), errors
    assert message in response.content.decode()
    assert not TokenLimits.objects.exists()


def test_another_domains_token_is_a_field_error(client, alice, domain, tokens):
    client.force_login(alice)
    response = post(client, domain, token=tokens["theirs"].pk, requests_per_minute="5")
    assert response.status_code == 400
    assert response.context["token_form"].errors["token"] == [
        "Choose a token that may act in this domain."
    ]
    assert "Choose a token that may act in this domain." in response.content.decode()
    missing = post(client, domain, requests_per_minute="5")
    assert missing.status_code == 400 and "token" in missing.context["token_form"].errors
    assert not TokenLimits.objects.exists()


def test_a_tokens_limits_are_cleared_from_the_table(client, alice, domain, tokens):
    token = tokens["ci"]
    TokenLimits.objects.create(domain=domain, token=token, requests_per_minute=3)
    client.force_login(alice)
    html = client.get(page(domain)).content.decode()
    assert 'value="token_clear"' in html and "Clear its limits" in html
    response = client.post(page(domain), {"form": "token_clear", "token": token.pk}, follow=True)
    assert response.status_code == 200
    assert "“ci” now has the domain&#x27;s per-token limits." in response.content.decode()
    assert not TokenLimits.objects.filter(token=token).exists()
    assert AuditEvent.objects.filter(domain=domain, action="limits.token_cleared").exists()
    # Nothing left to clear: a clear error, no 500.
    again = client.post(page(domain), {"form": "token_clear", "token": token.pk})
    assert again.status_code == 400
    assert "This token has no limits of its own in this domain." in again.content.decode()


def test_a_viewer_cannot_clear_a_tokens_limits(client, bob, domain, tokens):
    TokenLimits.objects.create(domain=domain, token=tokens["ci"], requests_per_minute=3)
    client.force_login(bob)
    assert "Clear its limits" not in client.get(page(domain)).content.decode()
    response = client.post(page(domain), {"form": "token_clear", "token": tokens["ci"].pk})
    assert response.status_code == 403
    assert TokenLimits.objects.filter(token=tokens["ci"]).exists()
