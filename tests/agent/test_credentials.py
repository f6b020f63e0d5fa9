"""The agent serves only its platform: the credential check, the credentials file, and
provisioning (signed by the platform, bound to an attestation nonce and the agent's TLS key)."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from agent import credentials as agent_credentials
from agent.app import create_app
from agent.config import AgentConfig, ConfigError
from agent.credentials import Entry, digest, provisioning_message, read_file, write_file
from tests.agent.credentials import AGENT_CREDENTIAL, AUTH, credentials_file
from tests.agent.test_attestation import make_tls_pair, spki_der

PLATFORM = Ed25519PrivateKey.generate()
PLATFORM_PUBLIC = base64.b64encode(
    PLATFORM.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode()


def make_client(config: AgentConfig) -> Iterator[TestClient]:
    with TestClient(create_app(config)) as client:
        yield client


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[TestClient]:
    """An agent without models that accepts the test credential and takes provisioning."""
    config = AgentConfig(
        models=(),
        attestation="none",
        credentials_file=credentials_file(tmp_path),
        platform_key=PLATFORM_PUBLIC,
    )
    yield from make_client(config)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def attest(client: TestClient) -> bytes:
    nonce = secrets.token_bytes(32)
    assert client.post("/attestation", json={"nonce": nonce.hex()}).status_code == 200
    return nonce


def provision(
    client: TestClient,
    credential: str,
    version: int,
    *,
    grace: int = 0,
    nonce: bytes | None = None,
    key: Ed25519PrivateKey = PLATFORM,
    tls_key: bytes = b"",
):
    nonce = attest(client) if nonce is None else nonce
    message = provisioning_message(
        nonce=nonce,
        tls_key_sha256=hashlib.sha256(tls_key).digest(),
        version=version,
        credential_sha256=digest(credential),
        previous_valid_seconds=grace,
    )
    return client.post(
        "/credentials",
        json={
            "credential": credential,
            "version": version,
            "previous_valid_seconds": grace,
            "nonce": nonce.hex(),
            "signature": base64.b64encode(key.sign(message)).decode(),
        },
    )


def new_credential() -> str:
    return "cube_bk_" + secrets.token_urlsafe(32)


def test_every_v1_request_needs_the_credential(agent: TestClient, caplog) -> None:
    wrong = new_credential()
    with caplog.at_level(logging.WARNING):
        missing = agent.get("/v1/models")
        bad = agent.get("/v1/models", headers=bearer(wrong))
        chat = agent.post("/v1/chat/completions", json={"model": "x", "messages": []})
        unknown = agent.get("/v1/anything-else")
    for response in (missing, bad, chat, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["x-request-id"]
        assert response.json()["error"] == {
            "message": "Missing or invalid credential: this agent serves only its Cube AI platform.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    assert agent.get("/v1/models", headers=AUTH).json() == {"object": "list", "data": []}
    # Refusals are logged with the reason, never with what was presented.
    assert "refused GET /v1/models from testclient: no credential" in caplog.text
    assert "a wrong credential" in caplog.text
    assert wrong not in caplog.text
    metrics = agent.get("/metrics", headers=AUTH).text
    assert "cubeai_agent_refused_requests_total 4.0" in metrics


def test_only_a_bare_health_probe_and_attestation_stay_open(agent: TestClient) -> None:
    # Found by an audit: /health listed the models and the attestation provider, and
    # /metrics (model names, traffic counts) needed no credential.
    health = agent.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    attestation = agent.post("/attestation", json={"nonce": "ab" * 32})
    assert attestation.status_code == 200 and attestation.json()["nonce"] == "ab" * 32
    refused = agent.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert "cubeai_agent" not in refused.text
    metrics = agent.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200
    assert "cubeai_agent_refused_requests_total 1.0" in metrics.text


def test_an_agent_without_any_credential_source_does_not_start() -> None:
    with pytest.raises(ConfigError, match="no credential source"):
        create_app(AgentConfig(models=(), attestation="none"))


def test_it_accepts_what_the_credentials_file_lists_and_follows_its_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_credentials, "RELOAD_INTERVAL_SECONDS", 0)
    path = credentials_file(tmp_path)
    config = AgentConfig(models=(), attestation="none", credentials_file=path)
    second = new_credential()
    for client in make_client(config):
        assert client.get("/v1/models", headers=AUTH).status_code == 200
        assert client.get("/v1/models", headers=bearer(second)).status_code == 401
        # An operator's rotation: the new one added, the old one kept a while, then dropped.
        write_file(path, [Entry(digest(second), 2), Entry(digest(AGENT_CREDENTIAL), 1)])
        assert client.get("/v1/models", headers=bearer(second)).status_code == 200
        assert client.get("/v1/models", headers=AUTH).status_code == 200
        write_file(path, [Entry(digest(second), 2)])
        assert client.get("/v1/models", headers=AUTH).status_code == 401
        # A broken file keeps what was accepted before.
        path.write_text("{not json")
        assert client.get("/v1/models", headers=bearer(second)).status_code == 200


def test_a_provisioned_credential_replaces_the_old_one_after_the_grace_period(
    agent: TestClient, tmp_path: Path
) -> None:
    first, second = new_credential(), new_credential()
    assert provision(agent, first, 5).json() == {"version": 5, "changed": True}
    # The file's credential had no grace: it stops at once.
    assert agent.get("/v1/models", headers=AUTH).status_code == 401
    assert agent.get("/v1/models", headers=bearer(first)).status_code == 200

    assert provision(agent, second, 6, grace=300).status_code == 200
    assert agent.get("/v1/models", headers=bearer(second)).status_code == 200
    assert agent.get("/v1/models", headers=bearer(first)).status_code == 200  # in its grace

    # Sending the credential in force again changes nothing (the periodic delivery).
    assert provision(agent, second, 6).json() == {"version": 6, "changed": False}
    assert agent.get("/v1/models", headers=bearer(first)).status_code == 200

    # The state survives a restart: it was written to the credentials file.
    entries = read_file(tmp_path / "agent-credentials.json")
    assert [(e.sha256, e.version, e.valid_until is None) for e in entries] == [
        (digest(second), 6, True),
        (digest(first), 5, False),
    ]
    assert AGENT_CREDENTIAL not in (tmp_path / "agent-credentials.json").read_text()
    assert first not in (tmp_path / "agent-credentials.json").read_text()


@pytest.mark.parametrize("case", ["other-key", "tampered", "unknown-nonce", "reused-nonce"])
def test_provisioning_without_the_platforms_proof_is_refused(agent: TestClient, case: str):
    credential = new_credential()
    if case == "other-key":
        response = provision(agent, credential, 9, key=Ed25519PrivateKey.generate())
    elif case == "tampered":
        nonce = attest(agent)
        message = provisioning_message(
            nonce=nonce,
            tls_key_sha256=hashlib.sha256(b"").digest(),
            version=9,
            credential_sha256=digest(new_credential()),
            previous_valid_seconds=0,
        )
        response = agent.post(
            "/credentials",
            json={
                "credential": credential,
                "version": 9,
                "previous_valid_seconds": 0,
                "nonce": nonce.hex(),
                "signature": base64.b64encode(PLATFORM.sign(message)).decode(),
            },
        )
    elif case == "unknown-nonce":
        response = provision(agent, credential, 9, nonce=secrets.token_bytes(32))
    else:
        nonce = attest(agent)
        assert provision(agent, new_credential(), 9, nonce=nonce).status_code == 200
        response = provision(agent, credential, 10, nonce=nonce)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert agent.get("/v1/models", headers=bearer(credential)).status_code == 401


def test_versions_only_go_up(agent: TestClient) -> None:
    newer, older = new_credential(), new_credential()
    assert provision(agent, newer, 20).status_code == 200
    refused = provision(agent, older, 19)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "stale_version"
    assert provision(agent, older, 20).status_code == 409
    assert agent.get("/v1/models", headers=bearer(older)).status_code == 401


def test_a_proof_made_for_another_agents_tls_key_is_refused(tmp_path: Path) -> None:
    cert, key = make_tls_pair(tmp_path)
    config = AgentConfig(
        models=(),
        attestation="none",
        tls_cert=cert,
        tls_key=key,
        credentials_file=credentials_file(tmp_path),
        platform_key=PLATFORM_PUBLIC,
    )
    credential = new_credential()
    for client in make_client(config):
        assert provision(client, credential, 3, tls_key=b"another agent").status_code == 403
        assert provision(client, credential, 3, tls_key=spki_der(cert)).status_code == 200
        assert client.get("/v1/models", headers=bearer(credential)).status_code == 200


def test_an_agent_without_a_platform_key_takes_no_provisioning(tmp_path: Path) -> None:
    config = AgentConfig(models=(), attestation="none", credentials_file=credentials_file(tmp_path))
    for client in make_client(config):
        response = provision(client, new_credential(), 2)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "disabled"


def test_a_malformed_platform_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="Ed25519"):
        AgentConfig(platform_key="not base64!")
