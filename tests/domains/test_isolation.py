"""Isolation matrix: every domain-scoped page and API route, for alice, bob and charlie.

Alice owns the domain (admin). Bob is a viewer in it: models:read, attestation:read and
usage:read. Charlie belongs only to a domain of his own. Charlie gets 404 on every route
(the domain's existence does not leak); bob gets 403 where his role lacks the permission.

To cover a new route, add a line to PAGES or API: (method, path, permission it needs).
`{domain}`, `{member}`, `{role}` and `{invitation}` are filled in with alice's objects.
"""

import pytest

from domains import permissions as P
from domains import services
from domains.models import Membership, Role

from .conftest import admin_actor

PAGES = [
    ("get", "/domains/{domain}/", None),
    ("get", "/domains/{domain}/settings/", P.DOMAIN_MANAGE),
    ("post", "/domains/{domain}/settings/", P.DOMAIN_MANAGE),
    ("post", "/domains/{domain}/settings/status/", P.DOMAIN_MANAGE),
    ("post", "/domains/{domain}/settings/delete/", P.DOMAIN_MANAGE),
    ("get", "/domains/{domain}/members/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/members/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/members/{member}/role/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/members/{member}/remove/", P.MEMBERS_MANAGE),
    ("get", "/domains/{domain}/roles/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/roles/", P.MEMBERS_MANAGE),
    ("get", "/domains/{domain}/roles/{role}/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/roles/{role}/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/roles/{role}/delete/", P.MEMBERS_MANAGE),
    ("get", "/domains/{domain}/invitations/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/invitations/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/invitations/{invitation}/revoke/", P.MEMBERS_MANAGE),
    ("post", "/domains/{domain}/invitations/{invitation}/resend/", P.MEMBERS_MANAGE),
    ("get", "/domains/{domain}/models/", P.MODELS_READ),
    ("post", "/domains/{domain}/models/set/", P.DOMAIN_MANAGE),
    ("get", "/domains/{domain}/audit/", P.AUDIT_READ),
    ("get", "/domains/{domain}/audit/export.csv", P.AUDIT_READ),
    ("get", "/domains/{domain}/audit/requests/", P.AUDIT_READ),
    ("get", "/domains/{domain}/audit/requests/export.csv", P.AUDIT_READ),
    ("get", "/domains/{domain}/usage/", P.USAGE_READ),
    ("get", "/domains/{domain}/usage/export.csv", P.USAGE_READ),
    ("get", "/domains/{domain}/attestation/", P.ATTESTATION_READ),
    ("get", "/domains/{domain}/guardrails/", P.AUDIT_READ),
    ("post", "/domains/{domain}/guardrails/", P.DOMAIN_MANAGE),
]

API = [
    ("get", "/api/domains/{domain}/", None),
    ("patch", "/api/domains/{domain}/", P.DOMAIN_MANAGE),
    ("delete", "/api/domains/{domain}/", P.DOMAIN_MANAGE),
    ("get", "/api/domains/{domain}/members/", P.MEMBERS_MANAGE),
    ("post", "/api/domains/{domain}/members/", P.MEMBERS_MANAGE),
    ("get", "/api/domains/{domain}/members/{member}/", P.MEMBERS_MANAGE),
    ("patch", "/api/domains/{domain}/members/{member}/", P.MEMBERS_MANAGE),
    ("delete", "/api/domains/{domain}/members/{member}/", P.MEMBERS_MANAGE),
    ("get", "/api/domains/{domain}/roles/", P.MEMBERS_MANAGE),
    ("post", "/api/domains/{domain}/roles/", P.MEMBERS_MANAGE),
    ("get", "/api/domains/{domain}/roles/{role}/", P.MEMBERS_MANAGE),
    ("patch", "/api/domains/{domain}/roles/{role}/", P.MEMBERS_MANAGE),
    ("delete", "/api/domains/{domain}/roles/{role}/", P.MEMBERS_MANAGE),
    ("get", "/api/domains/{domain}/invitations/", P.MEMBERS_MANAGE),
    ("post", "/api/domains/{domain}/invitations/", P.MEMBERS_MANAGE),
    ("get", "/api/domains/{domain}/invitations/{invitation}/", P.MEMBERS_MANAGE),
    ("delete", "/api/domains/{domain}/invitations/{invitation}/", P.MEMBERS_MANAGE),
    ("post", "/api/domains/{domain}/invitations/{invitation}/resend/", P.MEMBERS_MANAGE),
    ("get", "/api/domains/{domain}/models/", P.MODELS_READ),
    ("post", "/api/domains/{domain}/models/", P.DOMAIN_MANAGE),
    ("get", "/api/domains/{domain}/audit/", P.AUDIT_READ),
    ("get", "/api/domains/{domain}/audit/requests/", P.AUDIT_READ),
    ("get", "/api/domains/{domain}/usage/", P.USAGE_READ),
    ("get", "/api/domains/{domain}/usage/export/", P.USAGE_READ),
    ("post", "/api/domains/{domain}/guardrails/", P.DOMAIN_MANAGE),
]

VIEWER = P.BUILTIN_ROLES[P.VIEWER]
ROUTES = [pytest.param(*route, id=f"{route[0]} {route[1]}") for route in PAGES + API]
OBJECT_ROUTES = [
    route
    for route in ROUTES
    if any(key in route.values[1] for key in ("{member}", "{role}", "{invitation}"))
]


@pytest.fixture
def fill(domain, bob, custom_role, invitation):
    def fill(path: str) -> str:
        return path.format(
            domain=domain.pk, member=bob.pk, role=custom_role.pk, invitation=invitation.pk
        )

    return fill


def call(client, method: str, path: str):
    if path.startswith("/api/"):
        return getattr(client, method)(path, {}, format="json")
    return getattr(client, method)(path)


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES)
def test_an_outsider_gets_404_on_every_route(
    api, charlie, other_domain, fill, method, path, permission
):
    api.force_login(charlie)
    response = call(api, method, fill(path))
    assert response.status_code == 404
    assert b"Alice Labs" not in response.content


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES)
def test_a_restricted_member_gets_403_where_the_role_lacks_the_permission(
    api, bob, fill, method, path, permission
):
    api.force_login(bob)
    response = call(api, method, fill(path))
    if permission is None or permission in VIEWER:
        assert response.status_code not in (403, 404), response.content
    else:
        assert response.status_code == 403, response.content


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES)
def test_the_owner_gets_in_everywhere(api, alice, fill, method, path, permission):
    api.force_login(alice)
    response = call(api, method, fill(path))
    assert response.status_code not in (401, 403, 404, 405, 500), response.content


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES)
def test_a_signed_out_visitor_gets_nothing(api, fill, method, path, permission):
    response = call(api, method, fill(path))
    if path.startswith("/api/"):
        assert response.status_code in (401, 403)
    else:
        assert response.status_code == 302
        assert response["Location"].startswith("/signin/")


@pytest.mark.parametrize(("method", "path", "permission"), OBJECT_ROUTES)
def test_objects_of_another_domain_are_not_found_through_ones_own(
    api, alice, charlie, domain, other_domain, method, path, permission
):
    """Alice may manage her domain, but charlie's role, member and invitation ids are 404 there."""
    role = Role.objects.create(domain=other_domain, name="spy", permissions=["chat"])
    invitation, _ = services.invitation_send(
        actor=admin_actor(charlie),
        domain=other_domain,
        email="eve@example.com",
        role=role,
        link_base="http://testserver/",
    )
    api.force_login(alice)
    url = path.format(domain=domain.pk, member=charlie.pk, role=role.pk, invitation=invitation.pk)
    response = call(api, method, url)
    assert response.status_code == 404, response.content
    role.refresh_from_db()
    invitation.refresh_from_db()
    assert invitation.status == "pending"


def test_list_endpoints_return_nothing_of_another_domain(api, alice, domain, other_domain, charlie):
    Role.objects.create(domain=other_domain, name="spy", permissions=["chat"])
    api.force_login(alice)
    domains = api.get("/api/domains/").json()
    assert [d["id"] for d in domains] == [str(domain.pk)]
    members = api.get(f"/api/domains/{domain.pk}/members/").json()
    assert charlie.email not in [m["email"] for m in members]
    roles = api.get(f"/api/domains/{domain.pk}/roles/").json()
    assert "spy" not in [r["name"] for r in roles]
    audit = api.get(f"/api/domains/{domain.pk}/audit/").json()["results"]
    assert all(event["target"] != "charlie-corp" for event in audit)


def test_form_choices_offer_only_roles_of_the_domain(client, alice, domain, other_domain):
    Role.objects.create(domain=other_domain, name="spy", permissions=["chat"])
    Role.objects.create(domain=domain, name="auditor", permissions=["audit:read"])
    client.force_login(alice)
    for page in ("members", "invitations"):
        html = client.get(f"/domains/{domain.pk}/{page}/").content.decode()
        assert "auditor" in html
        assert "spy" not in html


def test_a_role_of_another_domain_is_refused_as_a_field_error(
    api, client, alice, bob, domain, other_domain
):
    spy = Role.objects.create(domain=other_domain, name="spy", permissions=["chat"])
    api.force_login(alice)
    response = api.patch(
        f"/api/domains/{domain.pk}/members/{bob.pk}/", {"role": spy.pk}, format="json"
    )
    assert response.status_code == 400
    assert "role" in response.json()
    client.force_login(alice)
    response = client.post(
        f"/domains/{domain.pk}/invitations/", {"email": "x@example.com", "role": spy.pk}
    )
    assert response.status_code == 400
    assert Membership.objects.get(user=bob, domain=domain).role.name == "viewer"


def test_a_token_limited_to_another_domain_gets_404(api, alice, domain, pat):
    second = services.domain_create(creator=alice, name="Second", route="second")
    token = pat(alice, scopes=["models:read"], domains=[second])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get(f"/api/domains/{second.pk}/").status_code == 200
    assert api.get(f"/api/domains/{domain.pk}/").status_code == 404
    assert [d["id"] for d in api.get("/api/domains/").json()] == [str(second.pk)]


@pytest.mark.parametrize(
    ("method", "path", "permission"), [pytest.param(*r, id=f"{r[0]} {r[1]}") for r in API if r[2]]
)
def test_a_token_without_the_scope_gets_403(api, alice, fill, pat, method, path, permission):
    scopes = [p for p in P.ALL if p != permission]
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {pat(alice, scopes=scopes)}")
    response = call(api, method, fill(path))
    assert response.status_code == 403, response.content
