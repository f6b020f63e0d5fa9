"""The agent serves only its platform (finding: anyone with network reach to an agent skipped
tokens, guardrails, rate limits and metering), and the platform provisions and rotates the
credential over the attested channel."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import httpx
import pytest

from inference import credentials
from inference.attestation import services as attestation_services
from inference.models import AttestationRecord, Backend
from tests.agent.conftest import AgentProcess
from tests.agent.credentials import AGENT_CREDENTIAL
from tests.agent.test_attestation import make_tls_pair

pytestmark = pytest.mark.e2e


def test_the_agent_process_refuses_requests_without_the_platforms_credential(tmp_path: Path):
    agent = AgentProcess(
        {"CUBEAI_AGENT_MODELS": "", "CUBEAI_AGENT_ATTESTATION": "none"}, workdir=tmp_path
    )
    wrong = "cube_bk_" + secrets.token_urlsafe(32)
    try:
        agent.wait_ready()
        chat = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]}
        refused = [
            httpx.post(f"{agent.url}/v1/chat/completions", json=chat),
            httpx.post(f"{agent.url}/v1/embeddings", json={"model": "m", "input": "x"}),
            httpx.get(f"{agent.url}/v1/models"),
            httpx.get(f"{agent.url}/v1/models", headers={"Authorization": f"Bearer {wrong}"}),
            httpx.get(f"{agent.url}/v1/models", headers={"Authorization": wrong}),
        ]
        allowed = httpx.get(
            f"{agent.url}/v1/models", headers={"Authorization": f"Bearer {AGENT_CREDENTIAL}"}
        )
        health = httpx.get(f"{agent.url}/health")
        attestation = httpx.post(f"{agent.url}/attestation", json={"nonce": "ab" * 32})
    finally:
        log = agent.stop()
    for response in refused:
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert allowed.status_code == 200
    assert allowed.json() == {"object": "list", "data": []}
    assert health.status_code == 200 and attestation.status_code == 200
    assert health.json() == {"status": "ok"}
    assert log.count("refused ") == len(refused)
    assert "refused POST /v1/chat/completions from 127.0.0.1: no credential" in log
    assert wrong not in log and AGENT_CREDENTIAL not in log


@pytest.fixture
def tls_agent(tmp_path: Path, settings):
    """The real agent over TLS, trusting the platform's provisioning key and holding no
    credential yet (its credentials file does not exist)."""
    cert, key = make_tls_pair(tmp_path)
    agent = AgentProcess(
        {
            "CUBEAI_AGENT_MODELS": "",
            "CUBEAI_AGENT_ATTESTATION": "none",
            "CUBEAI_AGENT_TLS_CERT": str(cert),
            "CUBEAI_AGENT_TLS_KEY": str(key),
            "CUBEAI_AGENT_CREDENTIALS_FILE": str(tmp_path / "state" / "credentials.json"),
            "CUBEAI_AGENT_PLATFORM_KEY": credentials.provisioning_public_key(),
        },
        workdir=tmp_path,
        scheme="https",
    )
    try:
        agent.wait_ready(verify=False)
        yield agent
    finally:
        agent.stop()


def models(agent: AgentProcess, credential: str | None) -> int:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    # The agent's certificate is self-signed; what is tested here is its credential check.
    response = httpx.get(f"{agent.url}/v1/models", headers=headers, verify=False)  # noqa: S501
    return response.status_code


@pytest.mark.django_db
def test_the_platform_provisions_and_rotates_the_credential_after_attestation(tls_agent):
    backend = Backend.objects.create(
        name="provisioned",
        base_url=f"{tls_agent.url}/v1",
        kind="agent",
        allow_not_confidential=True,
        provision_credential=True,
    )
    assert models(tls_agent, None) == 401

    # The first passed challenge generates the credential and hands it over.
    record = attestation_services.backend_attest(backend=backend, trigger="on-demand")
    assert record.ok, record.failures
    backend.refresh_from_db()
    first = credentials.backend_credential(backend)
    assert first.startswith("cube_bk_") and first not in backend.credential  # encrypted
    assert models(tls_agent, first) == 200
    assert models(tls_agent, None) == 401

    # A rotation keeps the old credential valid for the grace period only.
    credentials.backend_credential_rotate(backend=backend, grace_seconds=300)
    second = credentials.backend_credential(backend)
    assert second != first
    assert models(tls_agent, second) == 200 and models(tls_agent, first) == 200
    credentials.backend_credential_rotate(backend=backend, grace_seconds=0)
    third = credentials.backend_credential(backend)
    # No grace: every earlier credential ends now (the way to cut off a leaked one).
    assert models(tls_agent, third) == 200
    assert models(tls_agent, second) == 401 and models(tls_agent, first) == 401

    # The periodic challenge delivers the credential in force again: nothing changes.
    assert attestation_services.backend_attest(backend=backend, trigger="periodic").ok
    assert models(tls_agent, third) == 200
    assert AttestationRecord.objects.filter(backend=backend, ok=True).count() == 4


@pytest.mark.django_db
def test_a_credential_goes_only_to_the_key_that_was_attested(tls_agent):
    backend = Backend.objects.create(
        name="pinned",
        base_url=f"{tls_agent.url}/v1",
        kind="agent",
        allow_not_confidential=True,
        provision_credential=True,
    )
    record = attestation_services.backend_attest(
        backend=backend, trigger="on-demand", deliver=False
    )
    assert record.ok
    # As if another machine answered: the key the connection presents is not the one attested.
    record.key_sha256 = "00" * 32
    credential = credentials.credential_generate()
    with pytest.raises(credentials.CredentialNotDelivered, match="not the key it just attested"):
        credentials.credential_deliver(
            backend=backend, record=record, credential=credential, version=7
        )
    assert models(tls_agent, credential) == 401


@pytest.mark.django_db
def test_the_agent_refuses_a_credential_the_platform_did_not_sign(tls_agent, settings):
    backend = Backend.objects.create(
        name="forged",
        base_url=f"{tls_agent.url}/v1",
        kind="agent",
        allow_not_confidential=True,
        provision_credential=True,
    )
    record = attestation_services.backend_attest(
        backend=backend, trigger="on-demand", deliver=False
    )
    # Someone else's signing key: the agent trusts only the platform's.
    settings.CUBEAI_AGENT_PROVISIONING_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
    credential = credentials.credential_generate()
    with pytest.raises(credentials.CredentialNotDelivered, match="invalid_signature"):
        credentials.credential_deliver(
            backend=backend, record=record, credential=credential, version=7
        )
    assert models(tls_agent, credential) == 401
