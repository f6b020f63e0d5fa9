"""Certificate helpers shared by the verifiers.

AMD issues every VCEK and VLEK with serial number 0, which RFC 5280 forbids.
`cryptography` 50 still loads such certificates but emits a
`CryptographyDeprecationWarning` each time; we silence exactly that warning while
loading, so logs and test output stay clean. If a future `cryptography` refuses these
certificates outright, loading fails and verification fails closed with a clear reason.
"""

from __future__ import annotations

import warnings
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

_SERIAL_WARNING = "Parsed a serial number which wasn't positive"


# What cryptography raises for malformed certificates, at load time or lazily when a field
# is first read.
CERTIFICATE_ERRORS = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    UnsupportedAlgorithm,
)


class CertificateError(ValueError):
    """A certificate could not be parsed or is not acceptable."""


def load_certificate(data: bytes) -> x509.Certificate:
    """Load one certificate from DER or PEM bytes."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
        )
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
        except CERTIFICATE_ERRORS as exc:
            raise CertificateError(f"not a valid X.509 certificate ({exc})") from None


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode("ascii")


def sha256_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(name: x509.Name) -> str:
    """The first CN of a name, or "" when there is none."""
    attributes = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attributes[0].value) if attributes else ""


def is_valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def describe_validity(cert: x509.Certificate) -> str:
    before = cert.not_valid_before_utc.isoformat()
    after = cert.not_valid_after_utc.isoformat()
    return (
        f"{common_name(cert.subject) or cert.subject.rfc4514_string()} is valid {before} .. {after}"
    )
