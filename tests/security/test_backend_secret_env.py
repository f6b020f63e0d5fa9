"""A backend's credential can be read only from a CUBEAI_BACKEND_KEY_* variable (finding: a
staff member could point `api_key_env` at CUBEAI_TOKEN_PEPPERS and have the token pepper sent
as a Bearer token to a URL of their choosing)."""

import textwrap
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from domains.models import User
from inference import credentials
from inference.models import Backend
from inference.registry import load_snapshot

SECRETS = ["CUBEAI_TOKEN_PEPPERS", "DJANGO_SECRET_KEY", "DATABASE_URL", "CUBEAI_BACKEND_KEY_"]


@pytest.fixture
def staff_client(client, db):
    client.force_login(User.objects.create_superuser("ops@example.com", "pw-ops-123456"))
    return client


@pytest.mark.parametrize("name", SECRETS)
def test_the_management_api_refuses_other_variables(staff_client, name):
    response = staff_client.post(
        "/api/registry/backends/",
        {"name": "evil", "base_url": "https://attacker.example/v1", "kind": "openai",
         "tee_type": "tdx", "api_key_env": name},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400
    assert list(response.json()) == ["api_key_env"]
    assert "CUBEAI_BACKEND_KEY_" in response.json()["api_key_env"][0]
    assert not Backend.objects.exists()


def test_the_management_api_accepts_a_backend_key_variable(staff_client):
    response = staff_client.post(
        "/api/registry/backends/",
        {"name": "gpu", "base_url": "https://gpu.example/v1", "kind": "vllm",
         "tee_type": "tdx", "api_key_env": "CUBEAI_BACKEND_KEY_GPU"},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    assert Backend.objects.get().api_key_env == "CUBEAI_BACKEND_KEY_GPU"


@pytest.mark.parametrize("name", SECRETS)
def test_the_admin_refuses_other_variables(staff_client, name):
    response = staff_client.post(
        "/admin/inference/backend/add/",
        {"name": "evil", "base_url": "https://attacker.example/v1", "kind": "openai",
         "tee_type": "tdx", "api_key_env": name, "enabled": "on"},
    )  # fmt: skip
    assert response.status_code == 200
    assert "api_key_env" in response.context["adminform"].form.errors
    assert not Backend.objects.exists()


@pytest.mark.parametrize("name", SECRETS)
def test_apply_backends_refuses_other_variables(db, tmp_path, name):
    path = tmp_path / "backends.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            backends:
              - name: evil
                base_url: https://attacker.example/v1
                kind: openai
                tee_type: tdx
                api_key_env: "{name}"
            """
        )
    )
    with pytest.raises(CommandError, match=r"backends.0.api_key_env: .*CUBEAI_BACKEND_KEY_"):
        call_command("apply_backends", str(path), stdout=StringIO())
    assert not Backend.objects.exists()


def test_a_variable_named_before_the_rule_is_never_read(db, monkeypatch):
    monkeypatch.setenv("CUBEAI_TOKEN_PEPPERS", "p1:" + "s" * 40)
    monkeypatch.setenv("CUBEAI_BACKEND_KEY_GPU", "the-gpu-key")
    legacy = Backend.objects.create(name="legacy", base_url="https://a.example/v1", tee_type="tdx")
    allowed = Backend.objects.create(name="gpu", base_url="https://b.example/v1", tee_type="tdx")
    # Rows written before the rule (the migration clears them; a raw write stands in here).
    Backend.objects.filter(pk=legacy.pk).update(api_key_env="CUBEAI_TOKEN_PEPPERS")
    Backend.objects.filter(pk=allowed.pk).update(api_key_env="CUBEAI_BACKEND_KEY_GPU")
    targets = {t.name: t for t in load_snapshot().backends.values()}
    assert targets["legacy"].api_key == ""
    assert targets["gpu"].api_key == "the-gpu-key"


def test_a_stored_credential_is_encrypted_at_rest(db, settings):
    backend = Backend.objects.create(name="b", base_url="https://b.example/v1", tee_type="tdx")
    secret = credentials.credential_generate()
    credentials.backend_credential_set(backend=backend, credential=secret)
    stored = Backend.objects.values_list("credential", flat=True).get()
    assert secret not in stored and stored.startswith("gAAAA")  # a Fernet token
    assert credentials.backend_credential(Backend.objects.get()) == secret
    # A new secret key with the old one kept as a fallback still decrypts it.
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert credentials.backend_credential(Backend.objects.get()) == secret
    settings.SECRET_KEY_FALLBACKS = []
    assert credentials.backend_credential(Backend.objects.get()) == ""
