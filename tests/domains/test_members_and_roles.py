"""Members and roles: last-admin protection, no escalation, changes apply on the next request."""

import pytest

from domains import permissions, services
from domains.models import AuditEvent, Membership, Role


def _admin_role() -> Role:
    return services.role_builtin(name=permissions.ADMIN)


def test_an_admin_adds_an_existing_user_with_a_role(api, alice, charlie, domain):
    api.force_login(alice)
    member_role = services.role_builtin(name=permissions.MEMBER)
    response = api.post(
        f"/api/domains/{domain.pk}/members/",
        {"email": "CHARLIE@example.com", "role": member_role.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["role"]["name"] == "member"
    assert Membership.objects.get(domain=domain, user=charlie).role == member_role
    event = AuditEvent.objects.filter(domain=domain, action="member.add").get()
    assert event.actor == alice
    assert event.target == charlie.email


def test_it_refuses_to_add_an_unknown_user_or_an_existing_member(api, alice, bob, domain):
    api.force_login(alice)
    role = services.role_builtin(name=permissions.MEMBER)
    url = f"/api/domains/{domain.pk}/members/"
    unknown = api.post(url, {"email": "nobody@example.com", "role": role.pk}, format="json")
    assert unknown.status_code == 400
    assert "email" in unknown.json()
    again = api.post(url, {"email": bob.email, "role": role.pk}, format="json")
    assert again.status_code == 409
    assert "email" in again.json()
    bad = api.post(url, {"email": "not an email", "role": "x"}, format="json")
    assert bad.status_code == 400
    assert set(bad.json()) == {"email", "role"}
    assert Membership.objects.filter(domain=domain).count() == 2


def test_a_domain_always_keeps_one_admin(api, alice, domain):
    api.force_login(alice)
    viewer = services.role_builtin(name=permissions.VIEWER)
    demote = api.patch(
        f"/api/domains/{domain.pk}/members/{alice.pk}/", {"role": viewer.pk}, format="json"
    )
    assert demote.status_code == 409
    assert "role" in demote.json()
    remove = api.delete(f"/api/domains/{domain.pk}/members/{alice.pk}/")
    assert remove.status_code == 409
    assert Membership.objects.get(domain=domain, user=alice).role.name == "admin"


def test_the_last_admin_may_leave_once_another_admin_exists(api, alice, bob, domain):
    api.force_login(alice)
    url = f"/api/domains/{domain.pk}/members/"
    assert (
        api.patch(f"{url}{bob.pk}/", {"role": _admin_role().pk}, format="json").status_code == 200
    )
    assert api.delete(f"{url}{alice.pk}/").status_code == 204
    assert not Membership.objects.filter(domain=domain, user=alice).exists()


def test_a_custom_role_cannot_drop_the_last_admins_rights(api, alice, domain):
    api.force_login(alice)
    boss = Role.objects.create(domain=domain, name="boss", permissions=list(permissions.ALL))
    Membership.objects.filter(domain=domain, user=alice).update(role=boss)
    response = api.patch(
        f"/api/domains/{domain.pk}/roles/{boss.pk}/", {"permissions": ["chat"]}, format="json"
    )
    assert response.status_code == 409
    boss.refresh_from_db()
    assert set(boss.permissions) == set(permissions.ALL)


def test_a_role_change_takes_effect_on_the_next_request(api, alice, bob, domain):
    api.force_login(bob)
    members_url = f"/api/domains/{domain.pk}/members/"
    assert api.get(members_url).status_code == 403
    services.member_change_role(
        actor=services.Actor.staff(alice),
        domain=domain,
        membership=Membership.objects.get(user=bob, domain=domain),
        role=_admin_role(),
    )
    assert api.get(members_url).status_code == 200
    services.member_change_role(
        actor=services.Actor.staff(alice),
        domain=domain,
        membership=Membership.objects.get(user=bob, domain=domain),
        role=services.role_builtin(name=permissions.VIEWER),
    )
    assert api.get(members_url).status_code == 403


def test_a_role_change_applies_to_the_members_tokens_at_once(api, alice, bob, domain, pat):
    membership = Membership.objects.get(user=bob, domain=domain)
    membership.role = _admin_role()
    membership.save()
    token = pat(bob, scopes=["members:manage", "models:read"], domains=[domain])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    url = f"/api/domains/{domain.pk}/members/"
    assert api.get(url).status_code == 200
    membership.role = services.role_builtin(name=permissions.VIEWER)
    membership.save()
    assert api.get(url).status_code == 403
    membership.delete()
    assert api.get(url).status_code == 404


def test_editing_a_custom_role_changes_its_holders_rights_at_once(api, alice, bob, domain):
    ops = Role.objects.create(domain=domain, name="ops", permissions=["models:read"])
    Membership.objects.filter(user=bob, domain=domain).update(role=ops)
    api.force_login(bob)
    audit_url = f"/api/domains/{domain.pk}/audit/"
    assert api.get(audit_url).status_code == 403
    alice_api = type(api)()
    alice_api.force_login(alice)
    response = alice_api.patch(
        f"/api/domains/{domain.pk}/roles/{ops.pk}/",
        {"permissions": ["models:read", "audit:read"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert api.get(audit_url).status_code == 200


def test_custom_roles_are_validated_with_field_errors(api, alice, domain):
    api.force_login(alice)
    url = f"/api/domains/{domain.pk}/roles/"
    Role.objects.create(domain=domain, name="ops", permissions=[])
    cases = [
        ({"name": "x" * 51, "permissions": []}, "name"),
        ({"name": "admin", "permissions": []}, "name"),
        ({"name": "OPS", "permissions": []}, "name"),
        ({"name": "new", "permissions": ["fly"]}, "permissions"),
        ({"name": "new", "permissions": "chat"}, "permissions"),
        ({"permissions": []}, "name"),
    ]
    for body, field in cases:
        response = api.post(url, body, format="json")
        assert response.status_code == 400, body
        assert field in response.json(), (body, response.json())
    assert Role.objects.filter(domain=domain).count() == 1


def test_built_in_roles_cannot_be_changed_or_deleted(api, alice, domain):
    api.force_login(alice)
    admin = _admin_role()
    url = f"/api/domains/{domain.pk}/roles/{admin.pk}/"
    assert api.get(url).status_code == 200
    assert api.patch(url, {"name": "boss"}, format="json").status_code == 403
    assert api.delete(url).status_code == 403
    admin.refresh_from_db()
    assert admin.name == "admin"


def test_a_role_in_use_cannot_be_deleted(api, alice, bob, domain):
    ops = Role.objects.create(domain=domain, name="ops", permissions=["models:read"])
    Membership.objects.filter(user=bob, domain=domain).update(role=ops)
    api.force_login(alice)
    assert api.delete(f"/api/domains/{domain.pk}/roles/{ops.pk}/").status_code == 409
    Membership.objects.filter(user=bob, domain=domain).update(
        role=services.role_builtin(name=permissions.VIEWER)
    )
    assert api.delete(f"/api/domains/{domain.pk}/roles/{ops.pk}/").status_code == 204
    assert not Role.objects.filter(pk=ops.pk).exists()


class TestATokenNeverWidensItsRights:
    """A token acts with its scopes ∩ its owner's role; it cannot grant more than that."""

    @pytest.fixture
    def token_api(self, api, alice, domain, pat):
        scopes = ["members:manage", "chat", *permissions.BUILTIN_ROLES[permissions.VIEWER]]
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {pat(alice, scopes=scopes)}")
        return api

    def test_it_cannot_give_anyone_a_role_beyond_its_scopes(self, token_api, alice, bob, domain):
        response = token_api.patch(
            f"/api/domains/{domain.pk}/members/{bob.pk}/",
            {"role": _admin_role().pk},
            format="json",
        )
        assert response.status_code == 403
        assert "role" in response.json()
        assert Membership.objects.get(user=bob, domain=domain).role.name == "viewer"

    def test_it_cannot_create_a_role_beyond_its_scopes(self, token_api, domain):
        response = token_api.post(
            f"/api/domains/{domain.pk}/roles/",
            {"name": "escalate", "permissions": ["domain:manage"]},
            format="json",
        )
        assert response.status_code == 403
        assert not Role.objects.filter(name="escalate").exists()

    def test_it_cannot_invite_with_a_role_beyond_its_scopes(self, token_api, domain):
        response = token_api.post(
            f"/api/domains/{domain.pk}/invitations/",
            {"email": "dora@example.com", "role": _admin_role().pk},
            format="json",
        )
        assert response.status_code == 403
        assert not domain.invitations.exists()

    def test_it_cannot_demote_its_own_owner_who_outranks_it(self, token_api, alice, domain):
        response = token_api.patch(
            f"/api/domains/{domain.pk}/members/{alice.pk}/",
            {"role": services.role_builtin(name=permissions.VIEWER).pk},
            format="json",
        )
        assert response.status_code == 403

    def test_it_may_grant_what_it_holds_and_the_audit_names_the_token(self, token_api, bob, domain):
        response = token_api.post(
            f"/api/domains/{domain.pk}/roles/",
            {"name": "chatter", "permissions": ["chat", "models:read"]},
            format="json",
        )
        assert response.status_code == 201
        event = AuditEvent.objects.get(action="role.create")
        assert event.token_id is not None

    def test_it_cannot_create_domains_or_answer_invitations(self, token_api):
        assert token_api.post("/api/domains/", {"name": "x", "route": "x"}).status_code == 403
        assert token_api.get("/api/invitations/").status_code == 403


def test_a_member_manager_cannot_touch_an_admin(api, alice, bob, domain):
    manager = Role.objects.create(
        domain=domain, name="manager", permissions=["members:manage", "models:read"]
    )
    Membership.objects.filter(user=bob, domain=domain).update(role=manager)
    api.force_login(bob)
    assert api.delete(f"/api/domains/{domain.pk}/members/{alice.pk}/").status_code == 403
    response = api.patch(
        f"/api/domains/{domain.pk}/members/{bob.pk}/", {"role": _admin_role().pk}, format="json"
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=bob, domain=domain).role == manager
