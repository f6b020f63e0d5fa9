"""The Django admin console for platform staff."""

import pytest

from domains.models import Domain, Invitation, User


@pytest.fixture
def staff_client(client, db):
    staff = User.objects.create_superuser("ops@example.com", "x")
    client.force_login(staff)
    return client


def test_staff_freeze_and_enable_domains_with_actions(staff_client, domain):
    for action, status in (("freeze", "frozen"), ("enable", "enabled"), ("disable", "disabled")):
        response = staff_client.post(
            "/admin/domains/domain/",
            {"action": action, "_selected_action": [str(domain.pk)]},
        )
        assert response.status_code == 302
        domain.refresh_from_db()
        assert domain.status == status


def test_staff_revoke_invitations_from_the_console(staff_client, invitation):
    response = staff_client.post(
        "/admin/domains/invitation/",
        {"action": "revoke", "_selected_action": [str(invitation.pk)]},
    )
    assert response.status_code == 302
    invitation.refresh_from_db()
    assert invitation.status == Invitation.Status.REVOKED


@pytest.mark.parametrize(
    "path",
    [
        "/admin/domains/user/",
        "/admin/domains/domain/",
        "/admin/domains/membership/",
        "/admin/domains/invitation/",
        "/admin/domains/role/",
        "/admin/domains/auditevent/",
    ],
)
def test_the_console_pages_open(staff_client, domain, invitation, path):
    assert staff_client.get(path).status_code == 200


def test_the_domain_and_user_change_pages_open(staff_client, domain, alice):
    assert staff_client.get(f"/admin/domains/domain/{domain.pk}/change/").status_code == 200
    assert staff_client.get(f"/admin/domains/user/{alice.pk}/change/").status_code == 200
    assert Domain.objects.count() == 1


def test_domain_members_cannot_open_the_console(client, alice, domain):
    client.force_login(alice)
    assert client.get("/admin/domains/domain/").status_code == 302
