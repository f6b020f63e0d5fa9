"""Invitations: sent by email with a single-use link, answered by the invitee, expiring."""

import datetime
import re

import pytest
from django.core import mail
from django.utils import timezone

from domains import permissions, services
from domains.models import Invitation, Membership, User


def _link_token() -> str:
    return re.search(r"/invitations/link/([\w-]+)/", mail.outbox[-1].body).group(1)


@pytest.fixture
def dora(db) -> User:
    return User.objects.create_user("dora@example.com", "x", name="Dora")


@pytest.fixture
def sent(api, alice, domain):
    """Alice invites dora@example.com as a member through the API; returns the JSON."""
    api.force_login(alice)
    role = services.role_builtin(name=permissions.MEMBER)
    response = api.post(
        f"/api/domains/{domain.pk}/invitations/",
        {"email": "Dora@Example.com", "role": role.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    api.logout()
    return response.json()


def test_it_mails_a_link_and_stores_only_a_digest(sent, domain):
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["dora@example.com"]
    token = _link_token()
    invitation = Invitation.objects.get(pk=sent["id"])
    assert token not in invitation.token_digest
    assert invitation.token_digest == services.invitation_digest(token)
    assert len(token) >= 40
    assert sent["status"] == "pending"
    assert invitation.expires_at - timezone.now() > datetime.timedelta(days=6, hours=23)
    assert "token" not in sent


def test_the_invitee_sees_and_accepts_it_by_link(api, sent, dora, domain):
    api.force_login(dora)
    mine = api.get("/api/invitations/").json()
    assert [i["id"] for i in mine] == [sent["id"]]
    assert mine[0]["domain"] == {"id": str(domain.pk), "name": domain.name}
    response = api.post("/api/invitations/accept/", {"token": _link_token()}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "accepted"
    assert Membership.objects.get(user=dora, domain=domain).role.name == "member"
    assert api.get(f"/api/domains/{domain.pk}/").status_code == 200


def test_a_link_works_only_once(api, sent, dora, domain):
    api.force_login(dora)
    token = _link_token()
    assert api.post("/api/invitations/accept/", {"token": token}, format="json").status_code == 200
    Membership.objects.filter(user=dora, domain=domain).delete()
    again = api.post("/api/invitations/accept/", {"token": token}, format="json")
    assert again.status_code == 409
    assert "token" in again.json()
    assert not Membership.objects.filter(user=dora, domain=domain).exists()


def test_it_refuses_someone_elses_invitation(api, sent, charlie, domain):
    api.force_login(charlie)
    assert api.get("/api/invitations/").json() == []
    by_token = api.post("/api/invitations/accept/", {"token": _link_token()}, format="json")
    assert by_token.status_code == 403
    by_id = api.post("/api/invitations/accept/", {"id": sent["id"]}, format="json")
    assert by_id.status_code == 404
    decline = api.post("/api/invitations/decline/", {"id": sent["id"]}, format="json")
    assert decline.status_code == 404
    assert not Membership.objects.filter(user=charlie, domain=domain).exists()
    assert Invitation.objects.get(pk=sent["id"]).status == "pending"


def test_an_unknown_token_is_not_found(api, dora, sent):
    api.force_login(dora)
    response = api.post("/api/invitations/accept/", {"token": "guess"}, format="json")
    assert response.status_code == 404
    assert api.post("/api/invitations/accept/", {}, format="json").status_code == 400


def test_an_expired_invitation_cannot_be_accepted(api, sent, dora, domain):
    Invitation.objects.filter(pk=sent["id"]).update(expires_at=timezone.now())
    api.force_login(dora)
    assert api.get("/api/invitations/").json() == []
    response = api.post("/api/invitations/accept/", {"token": _link_token()}, format="json")
    assert response.status_code == 409
    assert "expired" in response.json()["token"][0]
    assert not Membership.objects.filter(user=dora, domain=domain).exists()


def test_a_declined_invitation_cannot_be_accepted(api, sent, dora, domain):
    api.force_login(dora)
    assert (
        api.post("/api/invitations/decline/", {"id": sent["id"]}, format="json").status_code == 200
    )
    response = api.post("/api/invitations/accept/", {"token": _link_token()}, format="json")
    assert response.status_code == 409
    assert Invitation.objects.get(pk=sent["id"]).status == "declined"


def test_a_revoked_invitation_cannot_be_accepted(api, alice, sent, dora, domain):
    token = _link_token()
    api.force_login(alice)
    revoke = api.delete(f"/api/domains/{domain.pk}/invitations/{sent['id']}/")
    assert revoke.status_code == 200
    assert revoke.json()["status"] == "revoked"
    assert api.delete(f"/api/domains/{domain.pk}/invitations/{sent['id']}/").status_code == 409
    api.force_login(dora)
    assert api.post("/api/invitations/accept/", {"token": token}, format="json").status_code == 409
    assert not Membership.objects.filter(user=dora, domain=domain).exists()


def test_resending_mails_a_new_link_and_kills_the_old_one(api, alice, sent, dora, domain):
    old = _link_token()
    Invitation.objects.filter(pk=sent["id"]).update(expires_at=timezone.now())
    api.force_login(alice)
    response = api.post(f"/api/domains/{domain.pk}/invitations/{sent['id']}/resend/")
    assert response.status_code == 200, response.content
    assert response.json()["expired"] is False
    new = _link_token()
    assert new != old
    api.force_login(dora)
    assert api.post("/api/invitations/accept/", {"token": old}, format="json").status_code == 404
    assert api.post("/api/invitations/accept/", {"token": new}, format="json").status_code == 200


def test_inviting_a_member_or_a_pending_address_is_a_field_error(api, alice, bob, sent, domain):
    api.force_login(alice)
    role = services.role_builtin(name=permissions.VIEWER)
    url = f"/api/domains/{domain.pk}/invitations/"
    member = api.post(url, {"email": "BOB@example.com", "role": role.pk}, format="json")
    assert member.status_code == 409
    assert "email" in member.json()
    pending = api.post(url, {"email": "dora@example.com", "role": role.pk}, format="json")
    assert pending.status_code == 409
    assert "email" in pending.json()
    invalid = api.post(url, {"email": "nope", "role": None}, format="json")
    assert invalid.status_code == 400
    assert set(invalid.json()) == {"email", "role"}
    assert Invitation.objects.filter(domain=domain).count() == 1
    assert len(mail.outbox) == 1


def test_an_expired_invitation_can_be_replaced_by_a_new_one(api, alice, sent, domain):
    Invitation.objects.filter(pk=sent["id"]).update(expires_at=timezone.now())
    api.force_login(alice)
    role = services.role_builtin(name=permissions.VIEWER)
    response = api.post(
        f"/api/domains/{domain.pk}/invitations/",
        {"email": "dora@example.com", "role": role.pk},
        format="json",
    )
    assert response.status_code == 201
    assert Invitation.objects.get(pk=sent["id"]).status == "expired"


def test_someone_invited_before_signing_up_accepts_after_sign_up(client, sent, domain):
    token = _link_token()
    response = client.get(f"/invitations/link/{token}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/signin/")
    signup = client.post(
        "/signup/",
        {
            "email": "dora@example.com",
            "password1": "s3cret-Passw0rd!",
            "password2": "s3cret-Passw0rd!",
        },
    )
    assert signup.status_code == 302
    assert "1 open invitation" in client.get("/domains/").content.decode()
    assert "Alice Labs" in client.get("/invitations/").content.decode()
    page = client.get(f"/invitations/link/{token}/")
    assert "Accept" in page.content.decode()
    accepted = client.post(f"/invitations/link/{token}/", {"answer": "accept"})
    assert accepted.status_code == 302
    assert accepted["Location"] == f"/domains/{domain.pk}/"
    assert client.get(accepted["Location"]).status_code == 200


def test_the_invitee_declines_from_the_invitations_page(client, sent, dora, domain):
    client.force_login(dora)
    response = client.post(f"/invitations/{sent['id']}/decline/")
    assert response.status_code == 302
    assert Invitation.objects.get(pk=sent["id"]).status == "declined"
    again = client.post(f"/invitations/{sent['id']}/accept/")
    assert again.status_code == 409
    assert not Membership.objects.filter(user=dora, domain=domain).exists()


def test_someone_else_cannot_use_the_link_page(client, sent, charlie, domain):
    client.force_login(charlie)
    token = _link_token()
    assert "another email address" in client.get(f"/invitations/link/{token}/").content.decode()
    assert client.post(f"/invitations/link/{token}/", {"answer": "accept"}).status_code == 403
    assert client.post(f"/invitations/{sent['id']}/accept/").status_code == 404
    assert not Membership.objects.filter(user=charlie, domain=domain).exists()


def test_adding_an_invitee_directly_revokes_the_pending_invitation(api, alice, sent, dora, domain):
    api.force_login(alice)
    role = services.role_builtin(name=permissions.VIEWER)
    response = api.post(
        f"/api/domains/{domain.pk}/members/", {"email": dora.email, "role": role.pk}, format="json"
    )
    assert response.status_code == 201
    assert Invitation.objects.get(pk=sent["id"]).status == "revoked"
