"""The management API for a domain's guardrail policy: reads, versions, activation, access."""

import json

from domains import permissions
from domains.models import AuditEvent, Membership, Role
from guardrails.models import GuardrailPolicy

DENY = {"input": [{"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"terms": ["x1"]}}]}


def url(domain, rest=""):
    return f"/api/domains/{domain.pk}/guardrails/{rest}"


def as_user(api, user):
    api.force_authenticate(user)
    return api


def test_an_admin_reads_the_builtin_default_before_any_version(api, domain, alice):
    body = as_user(api, alice).get(url(domain)).json()
    assert body["inherited"] is True and body["versions"] == []
    assert body["active"]["scope"] == "builtin"
    names = [spec["NAME"] for spec in body["active"]["document"]["input"]]
    assert "guardrails.checks.pii.PII" in names


def test_an_admin_saves_versions_and_activates_an_older_one(api, domain, alice):
    as_user(api, alice)
    created = api.post(url(domain), {"document": DENY}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["version"] == 1 and created.json()["active"]
    draft = api.post(url(domain), {"document": {}, "activate": False}, format="json").json()
    assert draft["version"] == 2 and not draft["active"]
    body = api.get(url(domain)).json()
    assert body["active"]["version"] == 1 and body["inherited"] is False
    assert [(v["version"], v["active"]) for v in body["versions"]] == [(2, False), (1, True)]
    activated = api.post(url(domain, "versions/2/activate/"))
    assert activated.status_code == 200 and activated.json()["active"]
    assert api.get(url(domain)).json()["active"]["version"] == 2
    assert api.get(url(domain, "versions/1/")).json()["document"]["input"][0]["OPTIONS"][
        "terms"
    ] == ["x1"]
    assert api.post(url(domain, "versions/7/activate/")).status_code == 404


def test_an_invalid_policy_gets_field_errors_and_writes_nothing(api, domain, alice):
    bad = {
        "input": [
            {"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"regexes": ["(a+)+$"]}},
            {"NAME": "guardrails.checks.pii.PII", "OPTIONS": {"email": "explode"}},
        ]
    }
    response = as_user(api, alice).post(url(domain), {"document": bad}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert "document.input.0.OPTIONS.regexes" in body
    assert "document.input.1.OPTIONS.email" in body
    assert not GuardrailPolicy.objects.exists()
    missing = api.post(url(domain), {}, format="json")
    assert missing.status_code == 400 and "document" in missing.json()


def test_export_answers_the_document_as_a_json_file(api, domain, alice):
    as_user(api, alice).post(url(domain), {"document": DENY}, format="json")
    response = api.get(url(domain), {"format": "export"})
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    document = json.loads(response.content)
    assert document["version"] == 1 and document["input"][0]["OPTIONS"]["terms"] == ["x1"]
    # What was exported can be saved back as is.
    again = api.post(url(domain), {"document": document}, format="json")
    assert again.status_code == 201 and again.json()["version"] == 2


def test_a_viewer_without_audit_read_is_refused_and_may_never_write(api, domain, bob):
    as_user(api, bob)
    assert api.get(url(domain)).status_code == 403
    assert api.post(url(domain), {"document": DENY}, format="json").status_code == 403
    assert api.post(url(domain, "versions/1/activate/")).status_code == 403


def test_an_auditor_reads_but_cannot_write(api, domain, alice, bob):
    as_user(api, alice).post(url(domain), {"document": DENY}, format="json")
    auditor = Role.objects.create(
        domain=domain, name="auditor", permissions=[permissions.AUDIT_READ]
    )
    Membership.objects.filter(user=bob, domain=domain).update(role=auditor)
    as_user(api, bob)
    assert api.get(url(domain)).status_code == 200
    assert api.get(url(domain, "versions/1/")).status_code == 200
    assert api.post(url(domain), {"document": DENY}, format="json").status_code == 403
    assert api.post(url(domain, "versions/1/activate/")).status_code == 403
    assert GuardrailPolicy.objects.count() == 1


def test_an_outsider_gets_404_for_every_operation(api, domain, charlie, other_domain):
    as_user(api, charlie)
    assert api.get(url(domain)).status_code == 404
    assert api.get(url(domain), {"format": "export"}).status_code == 404
    assert api.post(url(domain), {"document": DENY}, format="json").status_code == 404
    assert api.post(url(domain, "versions/1/activate/")).status_code == 404
    assert not GuardrailPolicy.objects.exists()


def test_tokens_act_within_their_scopes(api, domain, alice, pat):
    manager = pat(alice, scopes=[permissions.DOMAIN_MANAGE])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {manager}")
    created = api.post(url(domain), {"document": DENY}, format="json")
    assert created.status_code == 201
    event = AuditEvent.objects.get(domain=domain, action="guardrails.save")
    assert event.token_id is not None
    reader = pat(alice, scopes=[permissions.AUDIT_READ])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {reader}")
    assert api.get(url(domain)).status_code == 200
    assert api.post(url(domain), {"document": DENY}, format="json").status_code == 403
    chat_only = pat(alice, scopes=[permissions.CHAT])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {chat_only}")
    assert api.get(url(domain)).status_code == 403


def test_a_token_for_another_domain_gets_404(api, domain, alice, pat, other_domain, charlie):
    token = pat(charlie, scopes=[permissions.DOMAIN_MANAGE])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get(url(domain)).status_code == 404
    assert api.get(url(other_domain)).status_code == 200


def test_anonymous_gets_401(api, domain):
    assert api.get(url(domain)).status_code == 401
