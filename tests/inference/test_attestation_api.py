"""Attestation for clients (`/proxy/<domain-id>/attestation`), the staff policy API, the
domain page, and the client recipe script against the endpoint."""

import base64
import hashlib
import json
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import Client

from domains import permissions
from domains.services import Invalid
from inference.attestation import services as attestation_services
from inference.models import AttestationPolicy, AttestationRecord, Backend, Deployment, Model
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(agent_url, domain, other_domain):
    """The dev agent serving a model alice's domain may use; a hidden backend for charlie."""
    backend = Backend.objects.create(
        name="att-dev", base_url=f"{agent_url}/v1", kind="agent", allow_not_confidential=True
    )
    model = Model.objects.create(name="att-chat", tasks=["chat"])
    Deployment.objects.create(model=model, backend=backend, upstream_model="smollm2")
    hidden = Backend.objects.create(
        name="att-hidden", base_url=f"{agent_url}/v1", kind="agent", allow_not_confidential=True
    )
    private = Model.objects.create(name="att-private", tasks=["chat"], public=False)
    Deployment.objects.create(model=private, backend=hidden, upstream_model="x")
    return backend


def post(client, domain, token, body):
    return client.post(
        f"/proxy/{domain.pk}/attestation",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_a_client_gets_fresh_evidence_for_its_own_nonce(served, domain, alice, pat):
    nonce = secrets.token_hex(32)
    response = post(Client(), domain, pat(alice), {"nonce": nonce})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["nonce"] == nonce
    [item] = body["data"]  # never the backend of the private model
    assert item["backend"] == "att-dev" and item["confidential"] is False
    assert item["attestation"]["nonce"] == nonce
    assert item["report_data"] == hashlib.sha512(bytes.fromhex(nonce)).hexdigest()
    assert item["binding"] == "report_data = SHA-512(nonce || tls_public_key_der)"
    assert item["verification"]["ok"] is True
    assert item["verification"]["claims"]["confidential"] is False
    # Recorded, but the backend's own status is untouched by a client's challenge.
    served.refresh_from_db()
    assert served.attestation_status == "unverified"
    assert AttestationRecord.objects.get(backend=served).trigger == "client"


def test_the_policy_endpoint_exports_the_active_policies(served, domain, alice, pat):
    response = Client().get(
        f"/proxy/{domain.pk}/attestation/policy", HTTP_AUTHORIZATION=f"Bearer {pat(alice)}"
    )

    assert response.status_code == 200
    assert response.json()["data"] == [
        {
            "backend": "att-dev",
            "tee_type": "none",
            "version": None,
            "created_at": None,
            "policy": {"allow_insecure": True},
            "policy_fields": [
                {
                    "field": "allow_insecure",
                    "value": True,
                    "pinned": False,
                    "warning": "a backend without a TEE is accepted: nothing about it is attested",
                }
            ],
            "warnings": [
                "allow_insecure: a backend without a TEE is accepted: nothing about it is attested"
            ],
        }
    ]


def test_errors_use_the_openai_envelope(served, domain, alice, charlie, pat):
    client = Client()
    no_scope = pat(alice, scopes=[permissions.MODELS_READ])

    forbidden = post(client, domain, no_scope, {"nonce": "00" * 32})
    outsider = post(client, domain, pat(charlie), {"nonce": "00" * 32})
    bad_nonce = post(client, domain, pat(alice), {"nonce": "abc"})
    unknown = post(client, domain, pat(alice), {"nonce": "00" * 32, "backend": "att-hidden"})

    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["type"] == "permission_error"
    assert outsider.status_code == 404
    assert outsider.json()["error"]["type"] == "not_found_error"
    assert bad_nonce.status_code == 400
    assert bad_nonce.json()["error"]["param"] == "nonce"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "backend_not_found"
    assert not AttestationRecord.objects.exists()


def test_the_recipe_script_verifies_through_the_endpoint(served, domain, alice, pat, tmp_path):
    # The script talks to a live server; here its request and response shapes are checked
    # by saving this endpoint's answer and letting the script read it.
    nonce = secrets.token_hex(32)
    body = post(Client(), domain, pat(alice), {"nonce": nonce}).json()
    saved = tmp_path / "reply.json"
    saved.write_text(json.dumps(body["data"][0]))
    script = settings.BASE_DIR / "scripts" / "verify_attestation.py"

    result = subprocess.run(
        [sys.executable, str(script), "--file", str(saved), "--nonce", nonce],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # The development agent is not confidential: the script says so and refuses.
    assert result.returncode == 1
    assert "provider 'none' is not confidential" in result.stdout
    assert "Traceback" not in result.stderr


def test_staff_manage_policy_versions_through_the_api(db, alice, served):
    from tests.attestation.conftest import MILAN_MEASUREMENT

    snp = Backend.objects.create(
        name="att-snp", base_url="https://127.0.0.1:1/v1", tee_type="sev-snp"
    )
    staff, client = alice, Client()
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    url = f"/api/backends/{snp.name}/attestation/policy/"

    invalid = client.post(
        url,
        {"document": {"measurements": ["xyz"], "min_tcb": "any"}},
        content_type="application/json",
    )
    first = client.post(
        url,
        {"document": {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any"}},
        content_type="application/json",
    )
    second = client.post(
        url,
        {"document": {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any", "allow_debug": True}},
        content_type="application/json",
    )
    listing = client.get(url).json()
    export = client.get(url + "?format=export")

    assert invalid.status_code == 400
    assert "document.measurements.0" in invalid.json()
    assert first.status_code == 201 and first.json()["version"] == 1
    assert second.json()["version"] == 2
    assert listing["active"]["version"] == 2
    assert [v["version"] for v in listing["versions"]] == [2, 1]
    assert AttestationPolicy.objects.filter(backend=snp, active=True).count() == 1
    assert export["Content-Disposition"].startswith("attachment")
    assert export.json()["policy"]["allow_debug"] is True
    assert export.json()["policy"]["allowed_vmpls"] == [0]  # defaults are exported too


def test_the_policy_api_is_for_staff_only(db, bob, served):
    client = Client()
    client.force_login(bob)
    assert client.get("/api/backends/att-dev/attestation/policy/").status_code == 403


def test_the_same_document_makes_no_new_version_and_a_change_voids_verification(db):
    backend = Backend.objects.create(
        name="att-tdx",
        base_url="https://127.0.0.1:1/v1",
        tee_type="tdx",
        attestation_status="verified",
    )
    document = {"mrtds": ["aa" * 48]}
    first = attestation_services.attestation_policy_set(backend=backend, document=document)
    backend.refresh_from_db()
    assert backend.attestation_status == "unverified"
    assert (
        attestation_services.attestation_policy_set(backend=backend, document=document).pk
        == first.pk
    )
    with pytest.raises(Invalid) as invalid:
        attestation_services.attestation_policy_set(backend=backend, document={"mrtd": ["aa" * 48]})
    assert set(invalid.value.errors) == {"document.mrtds", "document.mrtd"}


def test_members_see_the_attestation_page_and_download_evidence(served, domain, bob, charlie):
    attestation_services.backend_attest(backend=served, trigger="on-demand")
    client = Client()
    client.force_login(bob)  # a viewer: attestation:read

    page = client.get(f"/domains/{domain.pk}/attestation/")
    download = client.get(f"/domains/{domain.pk}/attestation/{served.pk}/evidence.json")
    hidden = Backend.objects.get(name="att-hidden")
    not_serving = client.get(f"/domains/{domain.pk}/attestation/{hidden.pk}/evidence.json")
    client.force_login(charlie)
    outsider = client.get(f"/domains/{domain.pk}/attestation/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "att-dev" in html and "att-hidden" not in html
    assert "NOT CONFIDENTIAL (development)" in html
    assert "not-confidential" in html
    assert download.status_code == 200
    evidence = download.json()
    assert evidence["verification"]["ok"] is True
    assert evidence["binding"].startswith("report_data = SHA-512")
    nonce = bytes.fromhex(evidence["attestation"]["nonce"])
    assert evidence["attestation"]["report_data"] == hashlib.sha512(nonce).hexdigest()
    assert base64 and not_serving.status_code == 404
    assert outsider.status_code == 404


def test_a_page_needs_sign_in(served, domain):
    response = Client().get(f"/domains/{domain.pk}/attestation/")
    assert response.status_code == 302
    assert PASSWORD


def test_the_recipe_script_picks_a_backend_from_the_list_answer(
    served, domain, alice, pat, tmp_path
):
    nonce = secrets.token_hex(32)
    body = post(Client(), domain, pat(alice), {"nonce": nonce}).json()
    script = settings.BASE_DIR / "scripts" / "verify_attestation.py"
    saved = tmp_path / "answer.json"
    saved.write_text(json.dumps(body))
    result = subprocess.run(
        [sys.executable, str(script), "--file", str(saved), "--nonce", nonce],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "backend att-dev" in result.stdout
    assert "provider 'none' is not confidential" in result.stdout
    assert "Traceback" not in result.stderr


def test_attestation_state_changes_are_in_the_audit_log_of_the_domains_served(
    served, domain, other_domain, alice
):
    from domains.models import AuditEvent

    assert attestation_services.backend_attest(backend=served, trigger="on-demand").ok
    # Passing again changes nothing: no second event.
    assert attestation_services.backend_attest(backend=served, trigger="periodic").ok
    Backend.objects.filter(pk=served.pk).update(base_url="https://127.0.0.1:1/v1")
    served.refresh_from_db()
    assert not attestation_services.backend_attest(backend=served, trigger="periodic").ok

    events = list(
        AuditEvent.objects.filter(domain=domain, target="att-dev")
        .order_by("created_at", "id")
        .values_list("action", "details")
    )
    assert [action for action, _ in events] == ["backend.attested", "backend.attestation_failed"]
    assert events[0][1]["status"] == "not-confidential"
    assert events[1][1]["previous"] == "not-confidential"
    assert events[1][1]["status"] == "failed"
    # Charlie's domain may use the public model too, so it is told as well; the hidden
    # backend serves a private model nobody was granted and is nobody's business.
    assert AuditEvent.objects.filter(domain=other_domain, target="att-dev").count() == 2
    assert not AuditEvent.objects.filter(target="att-hidden").exists()
    client = Client()
    client.force_login(alice)
    page = client.get(f"/domains/{domain.pk}/audit/?action=backend.").content.decode()
    assert "backend.attestation_failed" in page and "backend.attested" in page
    failures = client.get(f"/domains/{domain.pk}/audit/?outcome=failure").content.decode()
    assert (
        "backend.attestation_failed" in failures and "<code>backend.attested</code>" not in failures
    )
