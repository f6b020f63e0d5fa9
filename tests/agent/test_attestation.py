"""``POST /attestation``: the ``none`` provider says so, and the configfs-tsm read path
(SEV-SNP and TDX) binds the nonce and the TLS key into the report data."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from agent.app import create_app
from agent.attestation import ConfigfsTsm, NoAttestation, select_provider
from agent.config import AgentConfig
from tests.agent.credentials import credentials_file
from tests.agent.fakes import SNP_REPORT_DATA_OFFSET, TDX_REPORT_DATA_OFFSET, FakeConfigfsTsm


def make_tls_pair(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cube-agent-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "agent.crt", directory / "agent.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def spki_der(cert_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def attestation_client(config: AgentConfig) -> Iterator[TestClient]:
    with TestClient(create_app(config)) as client:
        yield client


def state(directory: Path) -> Path:
    """A credentials file of its own in `directory` (every agent needs one)."""
    (directory / "state").mkdir(exist_ok=True)
    return credentials_file(directory / "state")


@pytest.fixture
def no_tee(tmp_path: Path) -> Iterator[TestClient]:
    config = AgentConfig(
        models=(),
        attestation="auto",
        tsm_path=tmp_path / "no-tsm",
        credentials_file=state(tmp_path),
    )
    yield from attestation_client(config)


def test_it_reports_provider_none_explicitly_when_not_in_a_tee(no_tee: TestClient) -> None:
    nonce = secrets.token_bytes(32)
    response = no_tee.post("/attestation", json={"nonce": nonce.hex()})
    assert response.status_code == 200
    body = response.json()
    assert body["provider"] == "none"
    assert body["confidential"] is False
    assert body["evidence"] is None
    assert body["auxblob"] is None
    assert body["tls_public_key"] is None
    assert body["nonce"] == nonce.hex()
    assert body["report_data"] == hashlib.sha512(nonce).hexdigest()
    assert dt.datetime.fromisoformat(body["generated_at"]).tzinfo is not None
    assert no_tee.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "nonce",
    ["", "abc", "zz" * 32, "00" * 31, "00" * 33, 12345],
    ids=["empty", "odd", "not-hex", "short", "long", "number"],
)
def test_it_rejects_a_bad_nonce(no_tee: TestClient, nonce: object) -> None:
    response = no_tee.post("/attestation", json={"nonce": nonce})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "nonce"
    assert error["type"] == "invalid_request_error"


def test_it_rejects_a_missing_nonce(no_tee: TestClient) -> None:
    response = no_tee.post("/attestation", json={})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "nonce"


def test_it_binds_the_tls_public_key_into_the_report_data(tmp_path: Path) -> None:
    cert, key = make_tls_pair(tmp_path)
    config = AgentConfig(
        models=(),
        attestation="none",
        tls_cert=cert,
        tls_key=key,
        credentials_file=state(tmp_path),
    )
    nonce = secrets.token_bytes(32)
    for client in attestation_client(config):
        body = client.post("/attestation", json={"nonce": nonce.hex()}).json()
    der = spki_der(cert)
    assert base64.b64decode(body["tls_public_key"]) == der
    assert body["report_data"] == hashlib.sha512(nonce + der).hexdigest()


@pytest.mark.parametrize(
    ("tee", "offset", "has_auxblob"),
    [("sev-snp", SNP_REPORT_DATA_OFFSET, True), ("tdx", TDX_REPORT_DATA_OFFSET, False)],
)
def test_it_reads_evidence_through_configfs_tsm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tee: str, offset: int, has_auxblob: bool
) -> None:
    base = tmp_path / "tsm" / "report"
    fake = FakeConfigfsTsm(base, tee, monkeypatch)
    cert, key = make_tls_pair(tmp_path)
    # "auto" must find the TEE by itself from the provider attribute.
    config = AgentConfig(
        models=(),
        attestation="auto",
        tsm_path=base,
        tls_cert=cert,
        tls_key=key,
        credentials_file=state(tmp_path),
    )
    nonce = secrets.token_bytes(32)
    for client in attestation_client(config):
        body = client.post("/attestation", json={"nonce": nonce.hex()}).json()
    expected = hashlib.sha512(nonce + spki_der(cert)).digest()
    assert body["provider"] == tee
    assert body["confidential"] is True
    assert body["report_data"] == expected.hex()
    report = base64.b64decode(body["evidence"])
    assert report[offset : offset + 64] == expected
    assert (body["auxblob"] is not None) is has_auxblob
    # Every entry the agent made was removed again (the probe and the report).
    assert fake.entries_created == 2
    assert list(base.iterdir()) == []


def test_it_selects_the_provider_by_config(tmp_path: Path) -> None:
    assert isinstance(select_provider("none", tmp_path), NoAttestation)
    assert isinstance(select_provider("auto", tmp_path / "missing"), NoAttestation)
    forced = select_provider("tdx", tmp_path)
    assert isinstance(forced, ConfigfsTsm)
    assert forced.name == "tdx"


def test_a_forced_tee_without_configfs_answers_503_not_fake_evidence(tmp_path: Path) -> None:
    config = AgentConfig(
        models=(),
        attestation="sev-snp",
        tsm_path=tmp_path / "missing",
        credentials_file=state(tmp_path),
    )
    for client in attestation_client(config):
        response = client.post("/attestation", json={"nonce": "11" * 32})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "attestation_unavailable"
        assert client.get("/health").status_code == 200
