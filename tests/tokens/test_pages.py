"""Profile → Personal Access Tokens: list, create, rotate, revoke, delete."""

import datetime
import re

import pytest
from django.utils import timezone

from domains import permissions
from tokens import keys, services
from tokens.models import Token

URL = "/profile/tokens/"


def _create(client, **overrides):
    data = {
        "name": "laptop",
        "description": "My laptop",
        "expiry": "30",
        "scopes": [permissions.MODELS_READ, permissions.CHAT],
        "domain_access": "all",
    }
    data.update(overrides)
    return client.post(f"{URL}new/", data, follow=True)


def _secret_in(response) -> str:
    match = re.search(r'id="token-secret"[^>]*>(cube_pat_[^<]+)<', response.content.decode())
    assert match, "no secret on the page"
    return match.group(1)


@pytest.fixture
def signed_in(client, alice, domain):
    client.force_login(alice)
    return client


def test_the_nav_links_to_the_tokens_page(signed_in):
    assert f'href="{URL}"' in signed_in.get("/domains/").content.decode()


def test_it_asks_to_sign_in(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert "/signin/" in response["Location"]


def test_the_create_form_offers_only_the_users_domains_and_scopes(
    client, bob, domain, other_domain
):
    client.force_login(bob)
    page = client.get(f"{URL}new/").content.decode()
    assert str(domain.pk) in page
    assert str(other_domain.pk) not in page
    assert 'value="models:read"' in page
    assert 'value="chat"' not in page  # Bob is a viewer.
    assert 'value="90" required id="id_expiry_2" checked' in page or re.search(
        r'value="90"[^>]*checked', page
    )


def test_creating_a_token_shows_the_secret_once_with_examples(signed_in, alice, domain):
    response = _create(signed_in)
    assert response.status_code == 200
    token = Token.objects.get()
    assert response.redirect_chain == [(f"{URL}{token.pk}/secret/", 302)]
    assert "no-store" in response["Cache-Control"]
    secret = _secret_in(response)
    assert services.token_authenticate(secret).owner_id == alice.pk
    page = response.content.decode()
    base_url = f"http://testserver/proxy/{domain.pk}/v1"
    assert f"curl {base_url}/models" in page
    assert f'base_url="{base_url}"' in page
    assert 'data-copy-target="token-secret"' in page
    assert "cubeai/tokens.js" in page
    token = Token.objects.get()
    assert token.name == "laptop"
    assert token.all_domains
    assert token.scopes == sorted([permissions.MODELS_READ, permissions.CHAT])
    assert abs(
        token.expires_at - (timezone.now() + datetime.timedelta(days=30))
    ) < datetime.timedelta(minutes=1)
    # Never again: the list shows only the key id.
    listing = signed_in.get(URL).content.decode()
    assert secret not in listing
    assert keys.parse(secret).secret not in listing
    assert token.display in listing


def test_reloading_the_created_page_issues_no_second_token_nor_shows_the_secret_again(
    signed_in, alice
):
    """Post/redirect/get: the POST answers with a redirect, so a reload repeats only the GET,
    and the secret, kept in the session for that one GET, is gone after it."""
    response = signed_in.post(
        f"{URL}new/",
        {"name": "laptop", "expiry": "30", "scopes": ["models:read"], "domain_access": "all"},
    )
    token = Token.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{URL}{token.pk}/secret/"
    assert "cube_pat_" not in response.content.decode()
    secret = _secret_in(signed_in.get(response["Location"]))
    assert services.token_authenticate(secret).token_id == token.pk
    again = signed_in.get(response["Location"], follow=True)
    assert again.redirect_chain == [(URL, 302)]
    page = again.content.decode()
    assert secret not in page and keys.parse(secret).secret not in page
    assert "was shown once and cannot be shown again" in page
    assert Token.objects.count() == 1
    assert "tokens:show-once" not in signed_in.session


def test_another_users_secret_page_is_a_404(client, signed_in, bob, alice):
    _create(signed_in)
    token = Token.objects.get()
    client.force_login(bob)
    assert client.get(f"{URL}{token.pk}/secret/").status_code == 404


def test_it_creates_a_token_for_chosen_domains_and_a_custom_date(signed_in, domain):
    date = (timezone.now() + datetime.timedelta(days=10)).date()
    response = _create(
        signed_in,
        expiry="custom",
        expiry_date=date.isoformat(),
        domain_access="chosen",
        domains=[str(domain.pk)],
    )
    assert response.status_code == 200
    token = Token.objects.get()
    assert not token.all_domains
    assert list(token.domains.all()) == [domain]
    assert token.expires_at == datetime.datetime.combine(
        date, datetime.time(0), tzinfo=datetime.UTC
    )


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"name": ""}, "name", "This field is required."),
        ({"name": "   "}, "name", "This field is required."),
        ({"expiry": "custom", "expiry_date": "2001-01-01"}, "expiry_date", "in the future"),
        ({"expiry": "custom", "expiry_date": ""}, "expiry_date", "An expiry is required."),
        ({"expiry": "custom", "expiry_date": "2999-01-01"}, "expiry_date", "At most 365 days"),
        ({"expiry": "12"}, "expiry", "Select a valid choice"),
        ({"scopes": []}, "scopes", "This field is required."),
        ({"scopes": ["nonsense"]}, "scopes", "Select a valid choice"),
        (
            {"domain_access": "chosen", "domains": []},
            "domains",
            "Choose domains you are a member of.",
        ),
    ],
)
def test_bad_input_shows_field_errors_and_creates_nothing(signed_in, overrides, field, message):
    response = _create(signed_in, **overrides)
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors[field])
    assert message in response.content.decode()
    assert not Token.objects.exists()


def test_scopes_beyond_the_owners_role_in_the_chosen_domain_are_refused(
    client, alice, bob, domain, other_domain
):
    # Alice is an admin in her domain only; chat in a domain where she is not a member is refused.
    client.force_login(bob)
    response = _create(client, scopes=[permissions.CHAT])
    assert response.status_code == 400
    assert "scopes" in response.context["form"].errors
    client.force_login(alice)
    response = _create(client, domain_access="chosen", domains=[str(other_domain.pk)])
    assert response.status_code == 400
    assert "domains" in response.context["form"].errors
    assert not Token.objects.exists()


def test_a_viewer_can_create_a_token_within_the_role(client, bob, domain):
    client.force_login(bob)
    response = _create(client, scopes=[permissions.MODELS_READ])
    assert response.status_code == 200
    assert Token.objects.get().owner == bob


def test_the_list_shows_status_scopes_domains_expiry_and_last_use(signed_in, alice, domain, pat):
    principal = services.token_authenticate(pat(alice, name="used", domains=[domain]))
    services.token_touch(principal=principal, ip="198.51.100.7")
    pat(alice, name="revoked-one")
    services.token_revoke(token=Token.objects.get(name="revoked-one"))
    pat(alice, name="expired-one")
    Token.objects.filter(name="expired-one").update(
        expires_at=timezone.now() - datetime.timedelta(days=1)
    )
    page = signed_in.get(URL).content.decode()
    assert "198.51.100.7" in page
    assert "Alice Labs" in page
    assert "models:read" in page
    assert ">Active<" in page
    assert ">Revoked<" in page
    assert ">Expired<" in page


def test_it_warns_about_tokens_expiring_within_seven_days(signed_in, alice, domain, pat):
    pat(alice, name="soon", days=3)
    pat(alice, name="later", days=30)
    page = signed_in.get(URL).content.decode()
    assert "expires within 7 days" in page or "expire within 7 days" in page
    warning = page[page.index('role="alert"') : page.index("Create a token")]
    assert "soon" in warning
    assert "later" not in warning


def test_rotating_shows_a_new_secret_and_stops_the_old_one(signed_in, alice, domain, pat):
    old = pat(alice)
    token = Token.objects.get()
    response = signed_in.post(f"{URL}{token.pk}/rotate/", {"grace_seconds": "0"}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(f"{URL}{token.pk}/secret/", 302)]
    assert "no-store" in response["Cache-Control"]
    new = _secret_in(response)
    assert new != old
    assert services.token_authenticate(new).token_id == token.pk
    with pytest.raises(services.AuthenticationFailed):
        services.token_authenticate(old)


def test_rotating_with_a_grace_period_keeps_the_old_secret_for_a_while(
    signed_in, alice, domain, pat
):
    old = pat(alice)
    token = Token.objects.get()
    response = signed_in.post(f"{URL}{token.pk}/rotate/", {"grace_seconds": "3600"}, follow=True)
    assert "old secret keeps working until" in response.content.decode()
    services.token_authenticate(old)
    services.token_authenticate(_secret_in(response))


def test_revoking_and_deleting_from_the_page(signed_in, alice, domain, pat):
    plaintext = pat(alice)
    token = Token.objects.get()
    response = signed_in.post(f"{URL}{token.pk}/revoke/", follow=True)
    assert "revoked" in response.content.decode()
    with pytest.raises(services.AuthenticationFailed):
        services.token_authenticate(plaintext)
    assert signed_in.post(f"{URL}{token.pk}/rotate/", {"grace_seconds": "0"}).status_code == 302
    signed_in.post(f"{URL}{token.pk}/delete/")
    assert not Token.objects.exists()


def test_nobody_else_can_rotate_revoke_or_delete_a_token(client, alice, charlie, domain, pat):
    plaintext = pat(alice)
    token = Token.objects.get()
    client.force_login(charlie)
    assert "test" not in client.get(URL).content.decode()
    for action in ("rotate", "revoke", "delete"):
        assert client.post(f"{URL}{token.pk}/{action}/", {"grace_seconds": "0"}).status_code == 404
    assert services.token_authenticate(plaintext).token_id == token.pk


def test_actions_need_post(signed_in, alice, domain, pat):
    pat(alice)
    token = Token.objects.get()
    assert signed_in.get(f"{URL}{token.pk}/revoke/").status_code == 405
    assert Token.objects.get().status == Token.Status.ACTIVE
