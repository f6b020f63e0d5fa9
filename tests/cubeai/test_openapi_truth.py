"""Both OpenAPI documents tell the truth: every operation documents its success response
and every path parameter, and the bodies returned match the documented schemas."""

import jsonschema
import pytest

from domains import permissions
from tests.openapi import check_body, problems


@pytest.fixture
def proxy_document(client):
    return client.get("/proxy/openapi.json").json()


@pytest.fixture
def management_document(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    return response.json()


def test_the_api_document_leaves_nothing_out(proxy_document):
    assert problems(proxy_document) == []
    # The operations that can stream say so beside their JSON answer.
    chat = proxy_document["paths"]["/proxy/{domain_id}/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    audio = proxy_document["paths"]["/proxy/{domain_id}/v1/audio/transcriptions"]["post"]
    assert set(audio["responses"]["200"]["content"]) == {"application/json", "text/plain"}


def test_the_management_document_leaves_nothing_out(management_document):
    assert problems(management_document) == []


def test_the_audit_list_is_documented_as_the_page_it_returns(
    api, alice, domain, management_document
):
    path = "/api/domains/{domain_id}/audit/"
    names = {p["name"] for p in management_document["paths"][path]["get"]["parameters"]}
    assert {"limit", "offset"} <= names
    api.force_login(alice)
    body = api.get(f"/api/domains/{domain.pk}/audit/?limit=1").json()
    assert set(body) == {"count", "next", "previous", "results"}
    check_body(management_document, path, "get", 200, body)
    with pytest.raises(jsonschema.ValidationError, match=r"is a required property"):
        # What was documented before: one event, not a page of them.
        check_body(management_document, path, "get", 200, body["results"][0])


def test_the_domain_and_model_list_bodies_match(api, client, alice, domain, pat, proxy_document):
    from tests.openapi import check_body as check

    api.force_login(alice)
    document = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    body = api.get(f"/api/domains/{domain.pk}/").json()
    check(document, "/api/domains/{domain_id}/", "get", 200, body)
    token = pat(alice, scopes=[permissions.MODELS_READ])
    response = client.get(f"/proxy/{domain.pk}/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    check(proxy_document, "/proxy/{domain_id}/v1/models", "get", 200, response.json())


def test_an_invitation_revoked_is_documented_as_the_invitation_it_returns(
    api, alice, domain, management_document
):
    # Found by the write fuzzer: the revoke answers 200 with the revoked invitation (the
    # row stays, for the record), and the document said 204 with no body.
    from domains import services
    from domains.selectors import Actor

    role = services.role_builtin(name=permissions.VIEWER)
    invitation, _ = services.invitation_send(
        actor=Actor.staff(alice),
        domain=domain,
        email="dave@example.com",
        role=role,
        link_base="http://testserver/",
    )
    api.force_login(alice)
    response = api.delete(f"/api/domains/{domain.pk}/invitations/{invitation.pk}/")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    path = "/api/domains/{domain_id}/invitations/{invitation_id}/"
    check_body(management_document, path, "delete", 200, response.json())
