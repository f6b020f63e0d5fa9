"""The server-rendered domain pages: forms, field errors, and flows."""

import datetime

from django.utils import timezone

from domains import permissions, services
from domains.models import Domain, Invitation, Membership, Role


def test_the_dashboard_links_each_domain_to_its_page(client, alice, domain):
    client.force_login(alice)
    page = client.get("/domains/").content.decode()
    assert f'href="/domains/{domain.pk}/"' in page


def test_the_overview_shows_the_role_and_only_the_tabs_it_allows(client, bob, domain):
    client.force_login(bob)
    page = client.get(f"/domains/{domain.pk}/").content.decode()
    assert "viewer" in page
    assert f"/domains/{domain.pk}/models/" in page
    assert f"/domains/{domain.pk}/members/" not in page
    assert f"/domains/{domain.pk}/settings/" not in page


def test_settings_save_name_tags_and_metadata(client, alice, domain):
    client.force_login(alice)
    response = client.post(
        f"/domains/{domain.pk}/settings/",
        {"name": "Alice Research", "tags": "prod, ml", "metadata": '{"team": "ml"}'},
    )
    assert response.status_code == 302
    domain.refresh_from_db()
    assert (domain.name, domain.tags, domain.metadata) == (
        "Alice Research",
        ["prod", "ml"],
        {"team": "ml"},
    )


def test_settings_refuse_bad_input_with_field_errors(client, alice, domain):
    client.force_login(alice)
    url = f"/domains/{domain.pk}/settings/"
    cases = [
        {"name": "x" * 101, "tags": "", "metadata": "{}"},
        {"name": "Ok", "tags": "", "metadata": "{not json"},
        {"name": "Ok", "tags": "", "metadata": "[1, 2]"},
        {"name": "Ok", "tags": "x" * 51, "metadata": "{}"},
        {"name": "Ok", "tags": ",".join(f"t{i}" for i in range(21)), "metadata": "{}"},
    ]
    for data in cases:
        response = client.post(url, data)
        assert response.status_code == 400, data
        assert 'class="error"' in response.content.decode()
    domain.refresh_from_db()
    assert domain.name == "Alice Labs"
    assert domain.metadata == {}


def test_disabling_and_deleting_from_the_settings_page(client, alice, domain):
    client.force_login(alice)
    assert (
        client.post(f"/domains/{domain.pk}/settings/status/", {"status": "disabled"}).status_code
        == 302
    )
    domain.refresh_from_db()
    assert domain.status == "disabled"
    # Freezing is not offered to domain admins.
    assert (
        client.post(f"/domains/{domain.pk}/settings/status/", {"status": "frozen"}).status_code
        == 400
    )
    wrong = client.post(f"/domains/{domain.pk}/settings/delete/", {"confirm": "nope"})
    assert wrong.status_code == 400
    assert (
        client.post(f"/domains/{domain.pk}/settings/delete/", {"confirm": "alice-labs"}).status_code
        == 302
    )
    assert Domain.objects.live().count() == 0


def test_members_page_adds_changes_and_removes(client, alice, bob, charlie, domain):
    client.force_login(alice)
    url = f"/domains/{domain.pk}/members/"
    member = services.role_builtin(name=permissions.MEMBER)
    assert client.post(url, {"email": charlie.email, "role": member.pk}).status_code == 302
    duplicate = client.post(url, {"email": charlie.email, "role": member.pk})
    assert duplicate.status_code == 400
    assert "already a member" in duplicate.content.decode()
    assert client.post(f"{url}{bob.pk}/role/", {"role": member.pk}).status_code == 302
    assert Membership.objects.get(user=bob, domain=domain).role == member
    assert client.post(f"{url}{charlie.pk}/remove/").status_code == 302
    assert not Membership.objects.filter(user=charlie, domain=domain).exists()


def test_the_last_admin_cannot_leave_from_the_page(client, alice, domain):
    client.force_login(alice)
    response = client.post(f"/domains/{domain.pk}/members/{alice.pk}/remove/")
    assert response.status_code == 409
    assert "at least one admin" in response.content.decode()
    viewer = services.role_builtin(name=permissions.VIEWER)
    demote = client.post(f"/domains/{domain.pk}/members/{alice.pk}/role/", {"role": viewer.pk})
    assert demote.status_code == 400
    assert Membership.objects.get(user=alice, domain=domain).role.name == "admin"


def test_roles_page_creates_edits_and_deletes_a_role(client, alice, domain):
    client.force_login(alice)
    url = f"/domains/{domain.pk}/roles/"
    response = client.post(url, {"name": "ops", "permissions": ["chat", "models:read"]})
    assert response.status_code == 302
    role = Role.objects.get(domain=domain, name="ops")
    duplicate = client.post(url, {"name": "ops", "permissions": ["chat"]})
    assert duplicate.status_code == 400
    assert client.get(f"{url}{role.pk}/").status_code == 200
    assert (
        client.post(f"{url}{role.pk}/", {"name": "ops2", "permissions": ["chat"]}).status_code
        == 302
    )
    role.refresh_from_db()
    assert (role.name, role.permissions) == ("ops2", ["chat"])
    assert client.post(f"{url}{role.pk}/delete/").status_code == 302
    assert not Role.objects.filter(pk=role.pk).exists()


def test_invitations_page_sends_resends_and_revokes(client, alice, bob, domain, mailoutbox):
    client.force_login(alice)
    url = f"/domains/{domain.pk}/invitations/"
    member = services.role_builtin(name=permissions.MEMBER)
    assert client.post(url, {"email": "dora@example.com", "role": member.pk}).status_code == 302
    invitation = Invitation.objects.get(domain=domain)
    assert len(mailoutbox) == 1
    existing = client.post(url, {"email": bob.email, "role": member.pk})
    assert existing.status_code == 400
    assert "already a member" in existing.content.decode()
    assert client.post(f"{url}{invitation.pk}/resend/").status_code == 302
    assert len(mailoutbox) == 2
    assert client.post(f"{url}{invitation.pk}/revoke/").status_code == 302
    invitation.refresh_from_db()
    assert invitation.status == "revoked"
    assert client.post(f"{url}{invitation.pk}/revoke/").status_code == 409
    assert "dora@example.com" in client.get(url).content.decode()


def test_audit_page_lists_the_domains_events(client, alice, domain, other_domain):
    services.domain_update(actor=services.Actor.staff(alice), domain=domain, name="Renamed Labs")
    client.force_login(alice)
    page = client.get(f"/domains/{domain.pk}/audit/").content.decode()
    assert "domain.update" in page
    assert "charlie-corp" not in page


def test_the_overview_shows_models_today_and_a_quick_start(client, alice, domain, other_domain):
    from inference import metering
    from inference.models import Backend, Deployment, Model

    tee = Backend.objects.create(
        name="gpu-tdx", base_url="https://10.0.0.5/v1", tee_type="tdx",
        attestation_status="verified",
    )  # fmt: skip
    dev = Backend.objects.create(
        name="dev-agent", base_url="http://127.0.0.1:1/v1", allow_not_confidential=True,
        attestation_status="not-confidential",
    )  # fmt: skip
    chat = Model.objects.create(name="llama-chat", tasks=["chat"])
    Deployment.objects.create(model=chat, backend=tee, upstream_model="x")
    Deployment.objects.create(model=chat, backend=dev, upstream_model="x")
    Model.objects.create(name="secret-model", tasks=["chat"], public=False)
    now = timezone.now()
    for days_ago, status in ((0, 200), (0, 500), (2, 200), (3, 200), (9, 200)):
        metering.write(
            [
                dict(
                    domain_id=domain.pk, user_id=alice.pk, token_id=1, request_id="r",
                    endpoint="chat.completions", model="llama-chat", status=status,
                    total_tokens=10, prompt_tokens=4, completion_tokens=6, latency_ms=5,
                    created_at=now - datetime.timedelta(days=days_ago),
                )
            ]
        )  # fmt: skip
    client.force_login(alice)
    html = client.get(f"/domains/{domain.pk}/").content.decode()
    base_url = f"http://testserver/proxy/{domain.pk}/v1"
    assert f'<code id="base-url">{base_url}</code>' in html
    assert f'<code id="domain-id">{domain.pk}</code>' in html
    assert 'data-copy-target="domain-id"' in html and 'data-copy-target="base-url"' in html
    assert "cubeai/copy.js" in html
    assert f'base_url="{base_url}"' in html and 'model="llama-chat"' in html
    models = html.split('id="overview-models"')[1].split("</table>")[0]
    assert "gpu-tdx" in models and "Intel TDX" in models and "verified" in models
    assert "dev-agent" in models and "NOT CONFIDENTIAL" in models
    assert "secret-model" not in models
    today = html.split('id="overview-usage"')[1].split("</div>\n</div>")[0]
    assert "<strong>2</strong>" in today  # requests today
    assert "<strong>20</strong>" in today  # tokens today
    assert "<strong>1</strong>" in today  # errors today
    assert "2 in all" in today  # the two requests of the seven days before
    assert "0.3 a day" in today
    assert "charlie" not in html.lower()


def test_the_overview_shows_each_panel_only_with_its_permission(client, charlie, domain):
    membership_role = services.role_builtin(name=permissions.VIEWER)
    services.member_add(
        actor=services.Actor.staff(domain.memberships.first().user),
        domain=domain,
        email=charlie.email,
        role=membership_role,
    )
    client.force_login(charlie)
    html = client.get(f"/domains/{domain.pk}/").content.decode()
    assert 'id="overview-usage"' in html  # viewers read usage
    custom = services.role_create(
        actor=services.Actor.staff(domain.memberships.first().user),
        domain=domain,
        name="nothing",
        permissions=[],
    )
    domain.memberships.filter(user=charlie).update(role=custom)
    html = client.get(f"/domains/{domain.pk}/").content.decode()
    assert 'id="overview-usage"' not in html and 'id="overview-models"' not in html
    assert "Quick start" in html
