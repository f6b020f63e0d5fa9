"""Binding a fresh nonce and the agent's TLS key into the hardware report.

The platform (or a client) sends the agent a fresh random nonce. The agent puts

    REPORT_DATA = SHA-512(nonce || tls_public_key_der)

into its SEV-SNP report or TDX quote: 64 bytes, filling the field exactly, where `nonce`
is the raw nonce bytes (not their hex) and `tls_public_key_der` is the DER
SubjectPublicKeyInfo of the key the agent's TLS server certificate carries. A verified
report with that value proves the evidence is fresh (it answers this nonce) and that the
TLS key was chosen inside the TEE, so the platform can pin the key for traffic.

Check it either way:

- after verification, with `check_binding(result, nonce, key_der)`; or
- as part of it, by putting `report_data_for(nonce, key_der).hex()` in the policy's
  `report_data`, which makes a mismatch an ordinary `report_data_mismatch` failure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .results import VerificationResult

REPORT_DATA_SIZE = 64


def spki_of_certificate(der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER certificate (the key the binding names)."""
    return (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def report_data_for(nonce: bytes, tls_public_key_der: bytes) -> bytes:
    """The 64-byte REPORT_DATA that binds `nonce` and the TLS public key."""
    return hashlib.sha512(nonce + tls_public_key_der).digest()


def check_binding(
    result_or_claims: VerificationResult | Mapping[str, Any],
    nonce: bytes,
    tls_public_key_der: bytes,
) -> bool:
    """Whether the verified report data equals `report_data_for(nonce, key)`.

    Given a `VerificationResult`, a failed result never binds anything. Given bare claims
    (for instance stored ones), the caller is responsible for them being verified.
    """
    if isinstance(result_or_claims, VerificationResult):
        if not result_or_claims.ok:
            return False
        claims: Mapping[str, Any] = result_or_claims.claims
    else:
        claims = result_or_claims
    reported = claims.get("report_data")
    if not isinstance(reported, str):
        return False
    expected = report_data_for(nonce, tls_public_key_der).hex()
    return hmac.compare_digest(reported.lower().encode(), expected.encode())
