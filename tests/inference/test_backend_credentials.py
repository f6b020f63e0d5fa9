"""A backend's credential in the admin: set (stored encrypted, never shown), refused when
malformed, generated for a provisioned agent; the rotate action needs a provisioned agent."""

import pytest

from domains.models import User
from inference import credentials
from inference.models import Backend

FIELDS = {"base_url": "https://gpu.example/v1", "tee_type": "tdx", "enabled": "on"}


@pytest.fixture
def staff_client(client, db):
    client.force_login(User.objects.create_superuser("ops@example.com", "pw-ops-123456"))
    return client


def test_staff_set_a_credential_that_is_stored_encrypted_and_never_shown(staff_client):
    secret = "vllm-key-" + "k" * 30
    response = staff_client.post(
        "/admin/inference/backend/add/",
        {"name": "gpu", "kind": "vllm", "new_credential": secret, **FIELDS},
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    backend = Backend.objects.get(name="gpu")
    assert credentials.backend_credential(backend) == secret
    assert secret not in backend.credential and backend.credential_version > 0
    page = staff_client.get(f"/admin/inference/backend/{backend.pk}/change/")
    assert secret not in page.content.decode()
    assert f"stored (version {backend.credential_version}" in page.content.decode()


@pytest.mark.parametrize(
    "bad", ["short", "has a space in the middle of it", "tab\there-and-more-text"]
)
def test_a_malformed_credential_is_a_field_error(staff_client, bad):
    response = staff_client.post(
        "/admin/inference/backend/add/",
        {"name": "gpu", "kind": "vllm", "new_credential": bad, **FIELDS},
    )
    assert response.status_code == 200
    assert "new_credential" in response.context["adminform"].form.errors
    assert not Backend.objects.exists()


def test_a_provisioned_agent_added_in_the_admin_gets_a_generated_credential(staff_client):
    response = staff_client.post(
        "/admin/inference/backend/add/",
        {"name": "tee", "kind": "agent", "provision_credential": "on", **FIELDS},
    )
    assert response.status_code == 302
    assert credentials.backend_credential(Backend.objects.get()).startswith("cube_bk_")


def test_the_rotate_action_refuses_a_backend_that_is_not_provisioned(staff_client):
    backend = Backend.objects.create(name="gpu", base_url="https://gpu.example/v1", tee_type="tdx")
    response = staff_client.post(
        "/admin/inference/backend/",
        {"action": "rotate_credential", "_selected_action": [str(backend.pk)]},
        follow=True,
    )
    assert "not rotated" in response.content.decode()
    backend.refresh_from_db()
    assert backend.credential == ""
