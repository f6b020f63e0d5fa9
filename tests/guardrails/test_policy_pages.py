"""The guardrail policy page of a domain, and the admin console for policies."""

import json

import pytest

from domains import permissions
from domains.models import Membership, Role, User
from guardrails.models import GuardrailPolicy

DENY = {"input": [{"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"terms": ["x1"]}}]}


def page(domain):
    return f"/domains/{domain.pk}/guardrails/"


def test_it_shows_the_policy_in_force_its_checks_and_the_editor(client, domain, alice):
    client.force_login(alice)
    response = client.get(page(domain))
    assert response.status_code == 200
    html = response.content.decode()
    assert "built-in platform default" in html
    assert "PromptInjection" in html and "guardrails.checks.pii.PII" in html
    assert 'name="document"' in html and "Save as new version" in html


def test_saving_creates_an_active_version_and_the_page_lists_it(client, domain, alice):
    client.force_login(alice)
    response = client.post(page(domain), {"document": json.dumps(DENY), "activate": "on"})
    assert response.status_code == 302
    row = GuardrailPolicy.objects.get(domain=domain)
    assert row.version == 1 and row.active and row.created_by == alice
    html = client.get(page(domain)).content.decode()
    assert "Version <strong>1</strong>" in html and "DenyList" in html


def test_a_draft_is_saved_inactive_and_activated_from_the_history(client, domain, alice):
    client.force_login(alice)
    client.post(page(domain), {"document": json.dumps(DENY), "activate": "on"})
    client.post(page(domain), {"document": "{}"})
    assert GuardrailPolicy.objects.get(domain=domain, active=True).version == 1
    assert "Activate v2" in client.get(page(domain)).content.decode()
    response = client.post(f"{page(domain)}versions/2/activate/")
    assert response.status_code == 302
    assert GuardrailPolicy.objects.get(domain=domain, active=True).version == 2


def test_errors_are_shown_per_field_and_nothing_is_saved(client, domain, alice):
    client.force_login(alice)
    bad = {
        "input": [
            {"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"regexes": ["(a+)+$"]}}
        ],
        "stream": {"window": 1},
    }
    response = client.post(page(domain), {"document": json.dumps(bad), "activate": "on"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "input.0.OPTIONS.regexes" in html and "stream.window" in html
    # The editor keeps what was typed.
    assert "(a+)+$" in html
    broken = client.post(page(domain), {"document": "{nope", "activate": "on"})
    assert broken.status_code == 400 and "not valid JSON" in broken.content.decode()
    assert not GuardrailPolicy.objects.exists()


def test_a_viewer_is_refused_and_an_auditor_reads_without_the_editor(client, domain, bob):
    client.force_login(bob)
    assert client.get(page(domain)).status_code == 403
    auditor = Role.objects.create(
        domain=domain, name="auditor", permissions=[permissions.AUDIT_READ]
    )
    Membership.objects.filter(user=bob, domain=domain).update(role=auditor)
    response = client.get(page(domain))
    assert response.status_code == 200 and 'name="document"' not in response.content.decode()
    assert client.post(page(domain), {"document": "{}"}).status_code == 403
    assert client.post(f"{page(domain)}versions/1/activate/").status_code == 403
    assert not GuardrailPolicy.objects.exists()


def test_an_outsider_gets_404(client, domain, charlie):
    client.force_login(charlie)
    assert client.get(page(domain)).status_code == 404
    assert client.post(page(domain), {"document": "{}"}).status_code == 404


def test_anonymous_is_sent_to_sign_in(client, domain):
    assert client.get(page(domain)).status_code == 302


# The admin console -----------------------------------------------------------------------


@pytest.fixture
def staff_client(client, db):
    client.force_login(User.objects.create_superuser("ops@example.com", "x"))
    return client


def test_staff_save_a_platform_default_through_the_validator(staff_client):
    response = staff_client.post(
        "/admin/guardrails/guardrailpolicy/add/",
        {"domain": "", "version": "", "document": json.dumps(DENY), "activate": "on"},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    row = GuardrailPolicy.objects.get(domain=None)
    assert row.version == 1 and row.active
    second = staff_client.post(
        "/admin/guardrails/guardrailpolicy/add/",
        {"domain": "", "version": "", "document": '{"description": "v2"}', "activate": "on"},
    )
    assert second.status_code == 302
    assert GuardrailPolicy.objects.get(domain=None, active=True).version == 2


def test_the_admin_refuses_an_invalid_policy(staff_client, domain):
    bad = {
        "input": [
            {"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"regexes": ["(a|ab)*c"]}}
        ]
    }
    response = staff_client.post(
        "/admin/guardrails/guardrailpolicy/add/",
        {"domain": str(domain.pk), "version": "", "document": json.dumps(bad), "activate": "on"},
    )
    assert response.status_code == 200
    assert "input.0.OPTIONS.regexes" in response.content.decode()
    assert not GuardrailPolicy.objects.exists()


def test_the_admin_lists_and_activates_versions(staff_client, domain):
    for document in (DENY, {"description": "v2"}):
        staff_client.post(
            "/admin/guardrails/guardrailpolicy/add/",
            {"domain": str(domain.pk), "version": "", "document": json.dumps(document)},
        )
    rows = GuardrailPolicy.objects.filter(domain=domain).order_by("version")
    assert [(r.version, r.active) for r in rows] == [(1, False), (2, False)]
    assert staff_client.get("/admin/guardrails/guardrailpolicy/").status_code == 200
    assert (
        staff_client.get(f"/admin/guardrails/guardrailpolicy/{rows[0].pk}/change/").status_code
        == 200
    )
    response = staff_client.post(
        "/admin/guardrails/guardrailpolicy/",
        {"action": "activate", "_selected_action": [str(rows[0].pk)]},
    )
    assert response.status_code == 302
    assert GuardrailPolicy.objects.get(domain=domain, active=True).version == 1


def common(**overrides) -> dict:
    """The common-settings form as the page posts it (the platform default's values)."""
    data = {
        "common-secrets": "mask",
        "common-email": "mask",
        "common-phone": "mask",
        "common-card": "mask",
        "common-iban": "mask",
        "common-national_id": "mask",
        "common-ip": "mask",
        "common-injection": "on",
        "common-injection_threshold": "1.0",
        "common-tokenized_inputs": "block",
        "common-activate": "on",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_the_common_settings_form_sits_beside_the_json_editor(client, domain, alice):
    client.force_login(alice)
    html = client.get(page(domain)).content.decode()
    assert 'id="common-settings"' in html and 'id="policy-editor"' in html
    assert 'name="common-email"' in html and 'name="document"' in html
    # Checkboxes sit inside their label, in a row of their own size.
    assert '<div class="field check">' in html
    assert 'type="checkbox" name="activate"' in html


def test_the_common_settings_are_written_into_the_policy_in_force(client, domain, alice):
    client.force_login(alice)
    client.post(page(domain), {"document": json.dumps(DENY), "activate": "on"})
    response = client.post(
        page(domain),
        common(**{"common-email": "block", "common-secrets": "block", "common-injection": None}),
    )
    assert response.status_code == 302
    row = GuardrailPolicy.objects.get(domain=domain, active=True)
    assert row.version == 2 and row.created_by == alice
    names = [spec["NAME"].rsplit(".", 1)[-1] for spec in row.document["input"]]
    assert "DenyList" in names  # kept from the policy in force
    assert "PromptInjection" not in names
    pii = [s for s in row.document["input"] + row.document["output"] if s["NAME"].endswith("PII")]
    assert len(pii) == 2 and all(s["OPTIONS"]["email"] == "block" for s in pii)
    secrets = [s for s in row.document["output"] if s["NAME"].endswith("Secrets")]
    assert secrets and secrets[0]["OPTIONS"]["action"] == "block"
    html = client.get(page(domain)).content.decode()
    assert '<option value="block" selected>block</option>' in html


def test_the_common_settings_go_through_the_policy_validator(client, domain, alice):
    client.force_login(alice)
    response = client.post(page(domain), common(**{"common-injection_threshold": "-1"}))
    assert response.status_code == 400
    html = response.content.decode()
    assert "threshold" in html and "greater than 0" in html
    assert not GuardrailPolicy.objects.filter(domain=domain).exists()
    bad_choice = client.post(page(domain), common(**{"common-email": "explode"}))
    assert bad_choice.status_code == 400
    assert "Select a valid choice" in bad_choice.content.decode()
    assert not GuardrailPolicy.objects.filter(domain=domain).exists()
