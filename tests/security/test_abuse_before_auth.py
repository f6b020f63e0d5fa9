"""Abuse before authentication (finding: the token checksum can be computed by anyone, so
every made-up key id cost database queries, and nothing limited failed attempts).

Unknown key ids are remembered (`CUBEAI_TOKEN_NEGATIVE_CACHE_SECONDS`), and each client
address has `CUBEAI_AUTH_FAILURES_PER_MINUTE` failed authentications before it gets 429s,
counted in one place (`tokens.throttle`) for both APIs.
"""

import random
import time
from types import SimpleNamespace

import pytest

from cubeai.exceptions import AuthenticationFailed
from tokens import keys, services, throttle


@pytest.fixture
def address():
    """A client address of this test alone: the counters may live in a shared Redis."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


@pytest.fixture(autouse=True)
def mid_window(monkeypatch):
    """Failures are counted per wall-clock minute: pin the clock 5 s into one, so a test
    that happens to run across a minute boundary does not see its count reset (or a
    one-second Retry-After)."""
    start = time.time() // throttle.WINDOW_SECONDS * throttle.WINDOW_SECONDS
    monkeypatch.setattr(throttle, "time", SimpleNamespace(time=lambda: start + 5))


def made_up_token() -> str:
    """A token with a valid checksum and a key id that names nothing."""
    raw, _ = keys.generate()
    return raw


def test_a_made_up_key_id_costs_queries_once_then_none(db, settings, django_assert_num_queries):
    # Live tokens are cached a short while only; a made-up key id is remembered far longer.
    settings.CUBEAI_TOKEN_CACHE_SECONDS = 0
    raw = made_up_token()
    with django_assert_num_queries(2), pytest.raises(AuthenticationFailed):
        services.token_authenticate(raw)
    with django_assert_num_queries(0), pytest.raises(AuthenticationFailed):
        services.token_authenticate(raw)


def test_a_token_issued_under_a_key_id_probed_before_works_at_once(alice, domain, pat, monkeypatch):
    raw = made_up_token()
    with pytest.raises(AuthenticationFailed):
        services.token_authenticate(raw)
    probed = keys.parse(raw)
    chosen = keys.ParsedToken(probed.key_id, "S" * keys.SECRET_LENGTH)
    monkeypatch.setattr(keys, "generate", lambda: (keys.compose(chosen), chosen))
    issued = pat(alice)
    assert services.token_authenticate(issued).owner_id == alice.pk


def test_failures_from_one_address_are_limited_on_the_openai_api(
    client, alice, domain, pat, settings, address, django_assert_num_queries
):
    settings.CUBEAI_AUTH_FAILURES_PER_MINUTE = 3
    url = f"/proxy/{domain.pk}/v1/models"
    valid = pat(alice)
    for _ in range(3):
        bad = client.get(url, HTTP_AUTHORIZATION=f"Bearer {made_up_token()}", REMOTE_ADDR=address)
        assert bad.status_code == 401
    with django_assert_num_queries(0):
        limited = client.get(
            url, HTTP_AUTHORIZATION=f"Bearer {made_up_token()}", REMOTE_ADDR=address
        )
    assert limited.status_code == 429
    assert limited["Retry-After"] == "55"
    assert limited["x-request-id"]
    assert limited.json() == {
        "error": {
            "message": "Too many failed authentications from your address. "
            f"Retry after {limited['Retry-After']} seconds.",
            "type": "rate_limit_error",
            "param": None,
            "code": "too_many_failed_authentications",
        }
    }
    # Until the window ends, no token is even looked up from that address...
    assert (
        client.get(url, HTTP_AUTHORIZATION=f"Bearer {valid}", REMOTE_ADDR=address).status_code
        == 429
    )
    # ...while every other address is served as before.
    other = client.get(url, HTTP_AUTHORIZATION=f"Bearer {valid}", REMOTE_ADDR="192.0.2.77")
    assert other.status_code == 200


def test_failures_from_one_address_are_limited_on_the_management_api(
    client, alice, domain, pat, settings, address
):
    settings.CUBEAI_AUTH_FAILURES_PER_MINUTE = 2
    url = f"/api/domains/{domain.pk}/"
    for _ in range(2):
        bad = client.get(url, HTTP_AUTHORIZATION=f"Bearer {made_up_token()}", REMOTE_ADDR=address)
        assert bad.status_code == 401
    limited = client.get(url, HTTP_AUTHORIZATION=f"Bearer {pat(alice)}", REMOTE_ADDR=address)
    assert limited.status_code == 429
    assert limited["Retry-After"] == "55"
    assert limited.json() == {
        "detail": "Too many failed authentications from your address. "
        "Expected available in 55 seconds."
    }


def test_the_openai_and_management_apis_share_one_count(client, domain, settings, address):
    settings.CUBEAI_AUTH_FAILURES_PER_MINUTE = 2
    bad = {"HTTP_AUTHORIZATION": f"Bearer {made_up_token()}", "REMOTE_ADDR": address}
    assert client.get(f"/proxy/{domain.pk}/v1/models", **bad).status_code == 401
    assert client.get(f"/api/domains/{domain.pk}/", **bad).status_code == 401
    assert client.get(f"/proxy/{domain.pk}/v1/models", **bad).status_code == 429
    assert client.get(f"/api/domains/{domain.pk}/", **bad).status_code == 429


def test_an_ipv6_client_is_counted_by_its_64_block(db, settings):
    settings.CUBEAI_AUTH_FAILURES_PER_MINUTE = 2
    block = f"2001:db8:{random.randrange(65536):x}:{random.randrange(65536):x}"
    for host in ("::1", "::2"):
        with pytest.raises(AuthenticationFailed):
            services.token_authenticate(made_up_token(), client_ip=f"{block}{host}")
    with pytest.raises(throttle.TooManyFailures):
        services.token_authenticate(made_up_token(), client_ip=f"{block}::3")
    # Without an address (an internal caller) nothing is counted or refused.
    with pytest.raises(AuthenticationFailed):
        services.token_authenticate(made_up_token())


@pytest.fixture
def unparseable_bucket():
    """The shared counter of unparseable addresses, empty for this test."""
    from django.core.cache import cache

    key = f"authfail:{throttle.UNPARSEABLE}:{throttle._window()[0]}"
    cache.delete(key)
    yield
    cache.delete(key)


@pytest.mark.parametrize("unparseable", ["x", "", "10.0.0.1, 10.0.0.2"])
def test_an_address_that_does_not_parse_is_counted_in_one_shared_bucket(
    db, settings, unparseable, unparseable_bucket
):
    # Found by an audit: such an address was neither counted nor refused, so a client that
    # could choose its forwarded address ("X-Forwarded-For: x") had no limit at all.
    settings.CUBEAI_AUTH_FAILURES_PER_MINUTE = 2
    for other in ("not-an-address", "::zz"):
        with pytest.raises(AuthenticationFailed):
            services.token_authenticate(made_up_token(), client_ip=other)
    with pytest.raises(throttle.TooManyFailures) as refused:
        services.token_authenticate(made_up_token(), client_ip=unparseable)
    assert refused.value.headers["Retry-After"] == "55"


def test_a_client_naming_a_made_up_address_is_limited_on_the_openai_api(
    client, domain, settings, unparseable_bucket
):
    settings.CUBEAI_AUTH_FAILURES_PER_MINUTE = 2
    url = f"/proxy/{domain.pk}/v1/models"
    bad = {"HTTP_AUTHORIZATION": f"Bearer {made_up_token()}", "REMOTE_ADDR": "x"}
    assert [client.get(url, **bad).status_code for _ in range(2)] == [401, 401]
    limited = client.get(url, **bad)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "55"
    assert limited.json()["error"]["code"] == "too_many_failed_authentications"


@pytest.mark.parametrize("page", ["/signin/", "/admin/login/"])
def test_failed_password_sign_ins_are_limited_per_address(client, alice, settings, address, page):
    # Found by an audit: the README said failed sign-ins were counted per client; the two
    # password forms counted nothing.
    from tests.conftest import PASSWORD

    alice.is_staff = True
    alice.save(update_fields=["is_staff"])
    settings.CUBEAI_AUTH_FAILURES_PER_MINUTE = 2
    wrong = {"username": "alice@example.com", "password": "wrong-password"}
    for _ in range(2):
        refused = client.post(page, wrong, REMOTE_ADDR=address)
        assert refused.status_code == 200
        assert "correct email" in refused.content.decode()
    # Over the limit even the right password is refused, before it is checked.
    right = {"username": "alice@example.com", "password": PASSWORD}
    limited = client.post(page, right, REMOTE_ADDR=address)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "55"
    assert "Too many failed authentications from your address" in limited.content.decode()
    assert "_auth_user_id" not in client.session
    # The failures counted against the address are those of the API too.
    api = client.get("/api/domains/", HTTP_AUTHORIZATION="Bearer x", REMOTE_ADDR=address)
    assert api.status_code == 429
    # Another address signs in.
    signed_in = client.post(page, right, REMOTE_ADDR="192.0.2.78")
    assert signed_in.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)
