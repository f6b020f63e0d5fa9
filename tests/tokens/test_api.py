"""The token management API: session only, field errors, the secret only on create/rotate."""

import datetime

import pytest
from django.utils import timezone

from domains import permissions
from tokens import keys, services
from tokens.models import Token

URL = "/api/tokens/"


@pytest.fixture
def api(client, alice, domain):
    client.force_login(alice)
    return client


def _post(client, url, data=None, **extra):
    return client.post(url, data or {}, content_type="application/json", **extra)


def _create(client, **overrides):
    data = {"name": "ci", "scopes": [permissions.MODELS_READ], "expires_in_days": 30}
    data.update(overrides)
    return _post(client, URL, data)


def test_it_creates_a_token_and_returns_the_secret_once(api, alice, domain):
    response = _create(api, description="for CI", domains=[str(domain.pk)])
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    secret = body["token"]
    assert services.token_authenticate(secret).owner_id == alice.pk
    assert body["prefix"] == f"cube_pat_{keys.parse(secret).key_id}_…"
    assert body["status"] == "active"
    assert body["domains"] == [str(domain.pk)]
    assert body["all_domains"] is False
    assert "digest" not in body
    listed = api.get(URL)
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()] == ["ci"]
    assert "token" not in listed.json()[0]
    detail = api.get(f"{URL}{body['id']}/").json()
    assert "token" not in detail
    assert keys.parse(secret).secret not in listed.content.decode() + str(detail)


def test_the_expiry_defaults_to_ninety_days_and_domains_to_all(api):
    body = _post(api, URL, {"name": "ci", "scopes": [permissions.CHAT]}).json()
    expires_at = datetime.datetime.fromisoformat(body["expires_at"])
    assert abs(expires_at - (timezone.now() + datetime.timedelta(days=90))) < datetime.timedelta(
        minutes=1
    )
    assert body["all_domains"] is True


def test_it_accepts_an_explicit_expiry_date(api):
    when = timezone.now() + datetime.timedelta(days=3)
    body = _create(api, expires_in_days=None, expires_at=when.isoformat()).json()
    assert datetime.datetime.fromisoformat(body["expires_at"]) == when


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"expires_in_days": -1}, "expires_at"),
        ({"expires_in_days": 366}, "expires_at"),
        ({"expires_in_days": 10**9}, "expires_at"),
        ({"expires_in_days": -(10**9)}, "expires_at"),
        ({"expires_in_days": None, "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["root"]}, "scopes"),
        ({"domains": []}, "domains"),
        ({"domains": ["not-a-uuid"]}, "domains"),
    ],
)
def test_bad_input_gives_field_errors_and_creates_nothing(api, overrides, field):
    response = _create(api, **overrides)
    assert response.status_code == 400
    body = response.json()
    assert list(body) == [field]
    assert all(isinstance(message, str) for message in body[field])
    assert not Token.objects.exists()


def test_scopes_the_owner_does_not_hold_are_refused(client, bob, domain):
    client.force_login(bob)
    response = _create(client, scopes=[permissions.CHAT, permissions.MODELS_READ])
    assert response.status_code == 400
    assert response.json() == {"scopes": ["You do not hold: chat."]}
    assert not Token.objects.exists()


def test_domains_the_owner_is_not_in_are_refused_like_unknown_ones(api, other_domain):
    foreign = _create(api, domains=[str(other_domain.pk)])
    unknown = _create(api, domains=["00000000-0000-0000-0000-000000000000"])
    assert foreign.status_code == unknown.status_code == 400
    assert foreign.json() == unknown.json() == {"domains": ["Choose domains you are a member of."]}
    assert not Token.objects.exists()


def test_rotate_returns_a_new_secret_and_the_old_one_stops(api, alice, pat):
    old = pat(alice)
    token = Token.objects.get()
    response = _post(api, f"{URL}{token.pk}/rotate/")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    new = response.json()["token"]
    assert services.token_authenticate(new).token_id == token.pk
    with pytest.raises(services.AuthenticationFailed):
        services.token_authenticate(old)


def test_rotate_with_a_grace_period(api, alice, pat):
    old = pat(alice)
    token = Token.objects.get()
    new = _post(api, f"{URL}{token.pk}/rotate/", {"grace_seconds": 600}).json()["token"]
    services.token_authenticate(old)
    services.token_authenticate(new)
    bad = _post(api, f"{URL}{token.pk}/rotate/", {"grace_seconds": 10**9})
    assert bad.status_code == 400
    assert list(bad.json()) == ["grace_seconds"]


def test_revoke_then_rotate_is_a_conflict_and_delete_removes_it(api, alice, pat):
    plaintext = pat(alice)
    token = Token.objects.get()
    revoked = _post(api, f"{URL}{token.pk}/revoke/")
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    with pytest.raises(services.AuthenticationFailed):
        services.token_authenticate(plaintext)
    assert _post(api, f"{URL}{token.pk}/rotate/").status_code == 409
    assert api.delete(f"{URL}{token.pk}/").status_code == 204
    assert not Token.objects.exists()


def test_other_users_tokens_are_not_found(client, alice, charlie, domain, pat):
    pat(alice)
    token = Token.objects.get()
    client.force_login(charlie)
    assert client.get(URL).json() == []
    assert client.get(f"{URL}{token.pk}/").status_code == 404
    assert _post(client, f"{URL}{token.pk}/rotate/").status_code == 404
    assert _post(client, f"{URL}{token.pk}/revoke/").status_code == 404
    assert client.delete(f"{URL}{token.pk}/").status_code == 404
    assert Token.objects.get().status == "active"


def test_a_token_cannot_list_create_rotate_revoke_or_delete_tokens(client, alice, domain, pat):
    plaintext = pat(alice, scopes=sorted(permissions.ALL))
    token = Token.objects.get()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}
    calls = [
        client.get(URL, **auth),
        _post(client, URL, {"name": "x", "scopes": ["chat"]}, **auth),
        client.get(f"{URL}{token.pk}/", **auth),
        _post(client, f"{URL}{token.pk}/rotate/", **auth),
        _post(client, f"{URL}{token.pk}/revoke/", **auth),
        client.delete(f"{URL}{token.pk}/", **auth),
    ]
    assert [response.status_code for response in calls] == [403] * 6
    assert Token.objects.count() == 1
    assert Token.objects.get().status == "active"


def test_a_token_is_refused_even_alongside_a_session(client, alice, domain, pat):
    plaintext = pat(alice)
    client.force_login(alice)
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 403


def test_no_credentials_or_a_bad_token_is_401(client, db):
    assert client.get(URL).status_code == 401
    response = client.get(URL, HTTP_AUTHORIZATION="Bearer cube_pat_nope")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
