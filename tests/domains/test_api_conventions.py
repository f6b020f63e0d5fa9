"""API conventions: CSRF for sessions, staff-only browsable API, schema, audit, errors."""

from rest_framework.test import APIClient

from domains.models import AuditEvent, User


def test_a_session_needs_a_csrf_token_to_change_anything(alice, domain):
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(alice)
    response = api.patch(f"/api/domains/{domain.pk}/", {"name": "X"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_a_token_needs_no_csrf_token(alice, domain, pat):
    api = APIClient(enforce_csrf_checks=True)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {pat(alice, scopes=['domain:manage'])}")
    response = api.patch(f"/api/domains/{domain.pk}/", {"name": "X"}, format="json")
    assert response.status_code == 200


def test_a_bad_token_is_401(api, domain):
    api.credentials(HTTP_AUTHORIZATION="Bearer cube_pat_nope")
    assert api.get(f"/api/domains/{domain.pk}/").status_code == 401


def test_the_browsable_api_is_for_staff_only(client, alice, domain):
    client.force_login(alice)
    response = client.get(f"/api/domains/{domain.pk}/", HTTP_ACCEPT="text/html")
    assert response["Content-Type"].startswith("application/json")
    staff = User.objects.create_user("ops@example.com", "x", is_staff=True)
    client.force_login(staff)
    response = client.get("/api/domains/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    from domains import permissions, services
    from domains.models import Membership

    Membership.objects.create(
        user=staff, domain=domain, role=services.role_builtin(name=permissions.ADMIN)
    )
    for path in ("", "members/", "roles/", "invitations/", "models/", "audit/"):
        response = client.get(f"/api/domains/{domain.pk}/{path}", HTTP_ACCEPT="text/html")
        assert response.status_code == 200, path
        assert response["Content-Type"].startswith("text/html")


def test_the_openapi_schema_describes_the_domain_routes(client, alice):
    client.force_login(alice)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"] if "json" in response["Content-Type"] else None
    text = response.content.decode()
    for route in (
        "/api/domains/",
        "/api/domains/{domain_id}/members/{user_id}/",
        "/api/domains/{domain_id}/roles/{role_id}/",
        "/api/domains/{domain_id}/invitations/{invitation_id}/resend/",
        "/api/domains/{domain_id}/models/",
        "/api/domains/{domain_id}/audit/",
        "/api/invitations/accept/",
    ):
        assert route in (paths or text)


def test_the_audit_log_is_paginated_and_holds_no_secrets(api, alice, domain, invitation):
    api.force_login(alice)
    response = api.get(f"/api/domains/{domain.pk}/audit/?limit=1")
    body = response.json()
    assert body["count"] == AuditEvent.objects.filter(domain=domain).count() == 2
    assert len(body["results"]) == 1
    assert body["results"][0]["action"] == "invitation.send"
    for event in AuditEvent.objects.all():
        assert invitation.token_digest not in str(event.details)


def test_a_member_reads_the_domain_with_their_rights(api, bob, domain):
    api.force_login(bob)
    body = api.get(f"/api/domains/{domain.pk}/").json()
    assert body["route"] == "alice-labs"
    assert body["permissions"] == ["attestation:read", "models:read", "usage:read"]
