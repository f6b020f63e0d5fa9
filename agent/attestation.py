"""Attestation evidence of the TEE the agent runs in.

A verifier sends a fresh 32-byte nonce; the agent asks the hardware for a report whose
report data is SHA-512(nonce || the agent's TLS public key, DER SubjectPublicKeyInfo), so
the evidence proves both freshness and which TLS key lives inside the TEE.

SEV-SNP and TDX guests expose the same Linux interface for this, configfs-tsm: make a
directory under ``/sys/kernel/config/tsm/report``, write 64 bytes to ``inblob``, read the
signed report from ``outblob`` (plus ``auxblob``, the SNP certificate table). Outside a TEE
the provider is ``none`` and says so: this agent never pretends to be confidential.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.errors import server_error

# What configfs-tsm's "provider" attribute says for each TEE kind.
TSM_PROVIDER_NAMES = {"sev-snp": "sev_guest", "tdx": "tdx_guest"}
NONCE_BYTES = 32


class AttestationError(RuntimeError):
    """The TEE could not produce a report."""


@dataclass(frozen=True)
class Evidence:
    """A report from the TEE (or none), ready to be sent to a verifier."""

    provider: str
    report: bytes | None = None
    auxblob: bytes | None = None


class AttestationProvider(Protocol):
    """Produces evidence binding 64 bytes of report data."""

    name: str
    confidential: bool

    def evidence(self, report_data: bytes) -> Evidence:
        """Return the TEE's evidence for ``report_data``."""
        ...


class NoAttestation:
    """Not running in a TEE: no evidence, and the reply says so explicitly."""

    name = "none"
    confidential = False

    def evidence(self, report_data: bytes) -> Evidence:
        return Evidence(provider=self.name)


class ConfigfsTsm:
    """SEV-SNP or TDX evidence through the Linux configfs-tsm report interface."""

    confidential = True

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.base = base
        self._lock = threading.Lock()

    def evidence(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise ValueError("configfs-tsm report data is exactly 64 bytes")
        # One entry per request keeps concurrent requests from overwriting each other's
        # inblob; the lock also keeps the guest driver's single request channel uncontended.
        entry = self.base / f"cubeai-{secrets.token_hex(8)}"
        with self._lock:
            entry.mkdir()
            try:
                before = _read_int(entry / "generation")
                (entry / "inblob").write_bytes(report_data)
                report = (entry / "outblob").read_bytes()
                after = _read_int(entry / "generation")
                provider = (entry / "provider").read_text().strip()
                auxblob = _read_optional(entry / "auxblob")
            finally:
                entry.rmdir()
        # Each write bumps "generation"; any other change means someone else wrote too.
        if after != before + 1:
            raise AttestationError(
                f"configfs-tsm entry changed while in use (generation {before} -> {after})"
            )
        if provider != TSM_PROVIDER_NAMES[self.name]:
            raise AttestationError(
                f"configfs-tsm provider is {provider!r}, expected "
                f"{TSM_PROVIDER_NAMES[self.name]!r} for {self.name}"
            )
        if not report:
            raise AttestationError("configfs-tsm returned an empty report")
        return Evidence(provider=self.name, report=report, auxblob=auxblob or None)


def select_provider(setting: str, tsm_path: Path) -> AttestationProvider:
    """The provider named by ``setting``, or for ``auto`` whichever the machine has."""
    if setting == "none":
        return NoAttestation()
    if setting in TSM_PROVIDER_NAMES:
        return ConfigfsTsm(setting, tsm_path)
    detected = detect_tsm(tsm_path)
    return ConfigfsTsm(detected, tsm_path) if detected else NoAttestation()


def detect_tsm(tsm_path: Path) -> str | None:
    """Which TEE the configfs-tsm interface at ``tsm_path`` reports, if it is there."""
    if not tsm_path.is_dir():
        return None
    entry = tsm_path / f"cubeai-probe-{secrets.token_hex(4)}"
    try:
        entry.mkdir()
    except OSError:
        return None
    try:
        provider = (entry / "provider").read_text().strip()
    except OSError:
        provider = ""
    finally:
        entry.rmdir()
    return next((k for k, v in TSM_PROVIDER_NAMES.items() if v == provider), None)


def tls_public_key_der(cert_path: Path | None) -> bytes | None:
    """The DER SubjectPublicKeyInfo of the agent's TLS certificate, or None without TLS."""
    if cert_path is None:
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def report_data_for(nonce: bytes, tls_public_key: bytes | None) -> bytes:
    """SHA-512(nonce || TLS public key DER): 64 bytes, the size of the TEE's report data."""
    return hashlib.sha512(nonce + (tls_public_key or b"")).digest()


def attest(
    provider: AttestationProvider, nonce: bytes, tls_public_key: bytes | None
) -> dict[str, Any]:
    """The ``/attestation`` reply for ``nonce``."""
    report_data = report_data_for(nonce, tls_public_key)
    try:
        evidence = provider.evidence(report_data)
    except (OSError, AttestationError) as exc:
        raise server_error(
            f"The TEE could not produce attestation evidence: {exc}",
            status=503,
            code="attestation_unavailable",
        ) from exc
    return {
        "provider": provider.name,
        "confidential": provider.confidential,
        "nonce": nonce.hex(),
        "report_data": report_data.hex(),
        "tls_public_key": _b64(tls_public_key),
        "evidence": _b64(evidence.report),
        "auxblob": _b64(evidence.auxblob),
        "generated_at": datetime.now(UTC).isoformat(),
    }


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data else None


def _read_int(path: Path) -> int:
    return int(path.read_text().strip() or "0")


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
