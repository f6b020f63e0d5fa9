"""Domain lifecycle: create, rename, tags and metadata, disable, freeze, delete."""

import pytest

from domains import permissions, services
from domains.models import AuditEvent, Domain, Invitation, Membership
from domains.selectors import Actor, domain_for_user

from .conftest import admin_actor


def test_creating_a_domain_through_the_api_makes_the_creator_admin(api, charlie):
    api.force_login(charlie)
    response = api.post(
        "/api/domains/",
        {"name": "Research", "route": "research", "tags": ["ml"], "metadata": {"cost": 7}},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["tags"] == ["ml"]
    assert set(body["permissions"]) == set(permissions.ALL)
    domain = Domain.objects.get(route="research")
    assert Membership.objects.get(domain=domain, user=charlie).role.name == "admin"
    assert AuditEvent.objects.filter(domain=domain, action="domain.create").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Again", "route": "alice-labs"}, "route"),
        ({"name": "Bad", "route": "Not Valid!"}, "route"),
        ({"name": "x" * 101, "route": "long-name"}, "name"),
        ({"name": "", "route": "empty"}, "name"),
        ({"name": "Tags", "route": "tags", "tags": "ml"}, "tags"),
        ({"name": "Tags", "route": "tags", "tags": ["x" * 51]}, "tags"),
        ({"name": "Tags", "route": "tags", "tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"name": "Meta", "route": "meta", "metadata": ["not", "an", "object"]}, "metadata"),
    ],
)
def test_bad_domain_input_is_a_400_with_field_errors_and_no_rows(api, alice, domain, body, field):
    api.force_login(alice)
    response = api.post("/api/domains/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert Domain.objects.count() == 1
    assert Membership.objects.count() == 2


def test_invalid_json_is_a_400(api, alice, domain):
    api.force_login(alice)
    response = api.patch(
        f"/api/domains/{domain.pk}/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400


def test_an_admin_renames_and_tags_a_domain(api, alice, domain):
    api.force_login(alice)
    response = api.patch(
        f"/api/domains/{domain.pk}/",
        {"name": "Alice Research", "tags": ["prod"], "metadata": {"team": "ml"}, "route": "x"},
        format="json",
    )
    assert response.status_code == 200, response.content
    domain.refresh_from_db()
    assert (domain.name, domain.tags, domain.metadata) == (
        "Alice Research",
        ["prod"],
        {"team": "ml"},
    )
    assert domain.route == "alice-labs"
    event = AuditEvent.objects.get(action="domain.update")
    assert event.details == {"fields": ["name", "tags", "metadata"]}


def test_a_failed_status_change_rolls_back_the_rename(api, alice, domain):
    api.force_login(alice)
    response = api.patch(
        f"/api/domains/{domain.pk}/", {"name": "Renamed", "status": "frozen"}, format="json"
    )
    assert response.status_code == 403
    domain.refresh_from_db()
    assert domain.name == "Alice Labs"
    assert domain.status == "enabled"


class TestADisabledDomain:
    @pytest.fixture(autouse=True)
    def disable(self, api, alice, domain):
        api.force_login(alice)
        response = api.patch(f"/api/domains/{domain.pk}/", {"status": "disabled"}, format="json")
        assert response.status_code == 200

    def test_admins_still_enter_it(self, api, client, alice, domain):
        assert api.get(f"/api/domains/{domain.pk}/members/").status_code == 200
        client.force_login(alice)
        assert "disabled" in client.get(f"/domains/{domain.pk}/").content.decode()

    def test_other_members_are_refused_with_403(self, api, client, bob, domain):
        api.force_login(bob)
        assert api.get(f"/api/domains/{domain.pk}/").status_code == 403
        assert api.get(f"/api/domains/{domain.pk}/models/").status_code == 403
        client.force_login(bob)
        assert client.get(f"/domains/{domain.pk}/").status_code == 403
        assert "Alice Labs" in client.get("/domains/").content.decode()

    def test_the_selector_refuses_inference_for_non_admins(self, bob, domain):
        from cubeai.exceptions import PermissionDenied

        with pytest.raises(PermissionDenied):
            domain_for_user(user=bob, domain_id=domain.pk, write=True)

    def test_outsiders_still_get_404(self, api, charlie, domain):
        api.force_login(charlie)
        assert api.get(f"/api/domains/{domain.pk}/").status_code == 404

    def test_an_admin_enables_it_again(self, api, bob, domain):
        assert (
            api.patch(
                f"/api/domains/{domain.pk}/", {"status": "enabled"}, format="json"
            ).status_code
            == 200
        )
        api.force_login(bob)
        assert api.get(f"/api/domains/{domain.pk}/").status_code == 200


class TestAFrozenDomain:
    @pytest.fixture
    def staff(self, db):
        from domains.models import User

        return User.objects.create_user("ops@example.com", "x", is_staff=True)

    @pytest.fixture(autouse=True)
    def freeze(self, staff, domain):
        services.domain_set_status(actor=Actor.staff(staff), domain=domain, status="frozen")

    def test_only_staff_can_freeze_or_unfreeze(self, api, alice, domain):
        api.force_login(alice)
        response = api.patch(f"/api/domains/{domain.pk}/", {"status": "enabled"}, format="json")
        assert response.status_code == 403
        domain.refresh_from_db()
        assert domain.status == "frozen"

    def test_members_can_read_but_not_change_anything(self, api, client, alice, bob, domain):
        api.force_login(alice)
        assert api.get(f"/api/domains/{domain.pk}/members/").status_code == 200
        assert (
            api.patch(f"/api/domains/{domain.pk}/", {"name": "X"}, format="json").status_code == 403
        )
        role = services.role_builtin(name=permissions.ADMIN)
        assert (
            api.patch(
                f"/api/domains/{domain.pk}/members/{bob.pk}/", {"role": role.pk}, format="json"
            ).status_code
            == 403
        )
        assert api.delete(f"/api/domains/{domain.pk}/").status_code == 403
        client.force_login(alice)
        assert client.get(f"/domains/{domain.pk}/settings/").status_code == 200
        assert client.post(f"/domains/{domain.pk}/settings/", {"name": "X"}).status_code == 403
        domain.refresh_from_db()
        assert domain.name == "Alice Labs"
        assert Domain.objects.live().filter(pk=domain.pk).exists()

    def test_services_refuse_non_staff_whatever_the_entry_point(self, alice, domain):
        from cubeai.exceptions import PermissionDenied

        with pytest.raises(PermissionDenied):
            services.domain_update(actor=admin_actor(alice), domain=domain, name="X")

    def test_inference_is_refused(self, alice, domain):
        from cubeai.exceptions import PermissionDenied

        with pytest.raises(PermissionDenied):
            domain_for_user(user=alice, domain_id=domain.pk, write=True)

    def test_staff_members_may_act(self, api, staff, domain, alice):
        Membership.objects.create(
            user=staff, domain=domain, role=services.role_builtin(name=permissions.ADMIN)
        )
        api.force_login(staff)
        assert (
            api.patch(
                f"/api/domains/{domain.pk}/", {"status": "enabled"}, format="json"
            ).status_code
            == 200
        )


class TestADeletedDomain:
    @pytest.fixture(autouse=True)
    def delete(self, api, alice, domain, invitation):
        api.force_login(alice)
        assert api.delete(f"/api/domains/{domain.pk}/").status_code == 204

    def test_it_disappears_for_everyone(self, api, client, alice, bob, domain):
        assert api.get(f"/api/domains/{domain.pk}/").status_code == 404
        assert api.get("/api/domains/").json() == []
        api.force_login(bob)
        assert api.get(f"/api/domains/{domain.pk}/").status_code == 404
        client.force_login(alice)
        assert client.get(f"/domains/{domain.pk}/").status_code == 404

    def test_its_route_is_never_reused(self, api, alice):
        response = api.post(
            "/api/domains/", {"name": "Again", "route": "alice-labs"}, format="json"
        )
        assert response.status_code == 400
        assert "route" in response.json()

    def test_its_pending_invitations_are_revoked(self, invitation):
        invitation.refresh_from_db()
        assert invitation.status == Invitation.Status.REVOKED

    def test_the_row_stays_for_the_record(self, domain):
        assert Domain.objects.get(pk=domain.pk).deleted_at is not None
        assert AuditEvent.objects.filter(domain=domain, action="domain.delete").exists()
