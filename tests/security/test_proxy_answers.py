"""Every answer under /proxy/ is OpenAI's (finding: `OPTIONS`, including a CORS preflight,
`HEAD` and `TRACE` got an HTML 405 with a wrong `Allow` and no request id, and
`/proxy/<d>/v2/...` an HTML 404), and CORS preflights are answered for the origins a
domain's admins allow, none by default.
"""

import time

import httpx
import pytest

from domains import permissions, services
from domains.selectors import Actor

API_PATHS = {
    "v1/chat/completions": "POST",
    "v1/completions": "POST",
    "v1/embeddings": "POST",
    "v1/audio/transcriptions": "POST",
    "v1/audio/translations": "POST",
    "v1/models": "GET",
    "v1/models/some-model": "GET",
    "attestation": "POST",
    "attestation/policy": "GET",
}


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "TRACE"])
def test_other_methods_get_a_405_in_the_envelope_with_the_right_allow(
    client, alice, domain, pat, method
):
    token = pat(alice)
    for path, allowed in API_PATHS.items():
        response = client.generic(
            method,
            f"/proxy/{domain.pk}/{path}",
            HTTP_AUTHORIZATION=f"Bearer {token}",
            HTTP_ORIGIN="https://evil.example",
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        )
        assert response.status_code == 405, path
        assert response["Allow"] == allowed, path
        assert response["Content-Type"] == "application/json"
        assert response["x-request-id"].startswith("req_")
        assert "access-control-allow-origin" not in response
        if method != "HEAD":
            assert response.json()["error"] == {
                "message": f"Method {method} is not allowed here; use {allowed}.",
                "type": "invalid_request_error",
                "param": None,
                "code": "method_not_allowed",
            }


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS", "DELETE"])
def test_unknown_paths_under_proxy_are_a_404_in_the_envelope(client, alice, domain, pat, method):
    token = pat(alice)
    for path in (
        f"/proxy/{domain.pk}/v2/chat/completions",
        f"/proxy/{domain.pk}/v1/nothing",
        f"/proxy/{domain.pk}/",
        f"/proxy/{domain.pk}",
        "/proxy/not-a-domain/v1/nothing",
        "/proxy/not-a-domain/v2/models",
        "/proxy/",
        "/proxy",
        # A decoded newline in a path parameter (found by schemathesis): `.` does not match it.
        f"/proxy/{domain.pk}/v1/models/a%0Ab",
        "/proxy/a%0A/v2/models",
    ):
        response = client.generic(method, path, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 404, path
        assert response["x-request-id"], path
        assert response.json()["error"]["code"] == "unknown_url", path
        assert response.json()["error"]["type"] == "not_found_error"


ALLOWED = "https://app.example.com"


def wait_until_allowed(url: str) -> httpx.Response:
    """The server reads allowed origins from its routing snapshot, rebuilt within 2 s of a
    change."""
    deadline = time.monotonic() + 15
    while True:
        response = preflight(url, ALLOWED)
        if response.status_code == 204 or time.monotonic() > deadline:
            return response
        time.sleep(0.3)


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_cors_answers_only_the_origins_a_domain_allows(live_server_process, alice, domain, pat):
    token = pat(alice)
    url = f"{live_server_process}/proxy/{domain.pk}/v1/chat/completions"
    models = f"{live_server_process}/proxy/{domain.pk}/v1/models"
    auth = {"Authorization": f"Bearer {token}"}

    # None by default: the preflight is the API's 405, with no CORS header.
    refused = preflight(url, ALLOWED)
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    assert refused.json()["error"]["code"] == "method_not_allowed"
    assert "access-control-allow-origin" not in refused.headers
    plain = httpx.get(models, headers={**auth, "Origin": ALLOWED})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers

    # As the settings page and the API save it: the routing snapshot's version moves.
    services.domain_update(actor=Actor.staff(alice), domain=domain, cors_origins=[ALLOWED])
    answered = wait_until_allowed(url)
    assert answered.status_code == 204
    assert answered.headers["access-control-allow-origin"] == ALLOWED
    assert answered.headers["access-control-allow-methods"] == "GET, POST"
    assert (
        answered.headers["access-control-allow-headers"]
        == "authorization, content-type, x-stainless-os"
    )
    assert answered.headers["vary"] == "Origin"
    assert answered.headers["x-request-id"].startswith("req_")

    listed = httpx.get(models, headers={**auth, "Origin": ALLOWED})
    assert listed.status_code == 200 and listed.json()["object"] == "list"
    assert listed.headers["access-control-allow-origin"] == ALLOWED
    exposed = listed.headers["access-control-expose-headers"].split(", ")
    assert {"x-request-id", "retry-after", "x-cube-backend-attestation"} <= set(exposed)
    for kind in ("requests", "tokens"):
        for name in ("limit", "remaining", "reset"):
            assert f"x-ratelimit-{name}-{kind}" in exposed
            assert listed.headers[f"x-ratelimit-{name}-{kind}"]
    # An error answer carries them too, so the page can read the envelope.
    unauthenticated = httpx.get(models, headers={"Origin": ALLOWED})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["access-control-allow-origin"] == ALLOWED

    # Another origin, or the same one on another domain, gets nothing.
    other = preflight(url, "https://evil.example")
    assert other.status_code == 405 and "access-control-allow-origin" not in other.headers
    sideways = httpx.get(models, headers={**auth, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in sideways.headers


@pytest.mark.django_db
def test_unknown_paths_under_the_management_api_are_a_404_in_its_envelope(
    client, alice, domain, pat
):
    token = pat(alice)
    for path in ("/api/nothing/", "/api/domains/a%0Ab/", "/api/a%0A/b/"):
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 404, path
        assert response["Content-Type"] == "application/json", path
        assert response.json()["code"] == "not_found", path


@pytest.mark.django_db
def test_unknown_paths_are_a_404_in_the_envelope_for_writes_too(alice, domain, pat):
    # Found by the write fuzzer: `DELETE /api/tokens/-1/` (no route takes a negative id) got
    # Django's HTML 403 for a missing CSRF cookie, as a token-authenticated client never has
    # one; the catch-alls answer nothing that a forged request could use.
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    token = pat(alice)
    for method in ("post", "put", "patch", "delete"):
        for path in ("/api/nothing/", "/api/tokens/-1/", f"/api/domains/{domain.pk}/x/"):
            response = getattr(client, method)(path, HTTP_AUTHORIZATION=f"Bearer {token}")
            assert response.status_code == 404, (method, path)
            assert response["Content-Type"] == "application/json", (method, path)
            assert response.json()["code"] == "not_found", (method, path)
        for path in ("/proxy/x", f"/proxy/{domain.pk}/v2/chat"):
            response = getattr(client, method)(path, HTTP_AUTHORIZATION=f"Bearer {token}")
            assert response.status_code == 404, (method, path)
            assert response.json()["error"]["code"] == "unknown_url", (method, path)


@pytest.mark.django_db
def test_an_id_too_large_for_the_database_is_a_404_not_a_500(client, alice, domain, pat):
    # Found by the fuzzer at 100 examples: `GET .../members/<33 digits>/` overflowed the
    # database's integer in the query (a 500). No row id has more than 18 digits.
    token = pat(alice, scopes=permissions.ALL)
    huge = "749585160364559629591683509780480"
    base = f"/api/domains/{domain.pk}"
    for path in (
        f"{base}/members/{huge}/",
        f"{base}/roles/{huge}/",
        f"{base}/invitations/{huge}/",
        f"{base}/guardrails/versions/{huge}/",
        f"{base}/limits/tokens/{huge}/",
        f"/api/tokens/{huge}/",
    ):
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found", path
    client.force_login(alice)
    assert client.get(f"/profile/tokens/{huge}/usage/").status_code == 404
