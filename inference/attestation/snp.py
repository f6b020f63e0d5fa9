"""AMD SEV-SNP: report parsing, the VCEK/VLEK chain to a pinned ARK, and the policy.

The report layout follows AMD's SEV-SNP firmware ABI (report versions 2 and 3, 1184
bytes, little-endian). Bytes 0x000..0x29F are signed with ECDSA P-384/SHA-384 by the
chip's VCEK, or by the cloud provider's VLEK when the key-info SIGNING_KEY field says so;
R and S are 72-byte little-endian numbers at 0x2A0 and 0x2E8.

The endorsement key's certificate comes from the evidence (the extended report's
certificate table, which configfs-tsm calls `auxblob`) or, failing that, from an
operator-supplied cache keyed by `vcek_cache_key(chip_id, reported_tcb)`. No network is
used. The issuers are always the pinned ASK/ASVK and ARK from `roots`; any the guest
sends are ignored.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import roots
from .base import Verifier
from .certs import (
    CERTIFICATE_ERRORS,
    CertificateError,
    common_name,
    describe_validity,
    is_valid_at,
    load_certificate,
    to_pem,
)
from .policy import SnpPolicy
from .results import Evidence, Failure, FailureCode, TeeType, VerificationResult

REPORT_SIZE = 1184
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3)

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")

_CERT_TABLE_ENTRY = struct.Struct("<16sII")
_MAX_CERT_TABLE_ENTRIES = 64

_SIGNING_KEYS = {0: "vcek", 1: "vlek"}
_POLICY_DEBUG_BIT = 19

_AMD_OID = "1.3.6.1.4.1.3704.1"
_OID_HWID = x509.ObjectIdentifier(f"{_AMD_OID}.4")
_OID_TCB = {
    "bootloader": x509.ObjectIdentifier(f"{_AMD_OID}.3.1"),
    "tee": x509.ObjectIdentifier(f"{_AMD_OID}.3.2"),
    "snp": x509.ObjectIdentifier(f"{_AMD_OID}.3.3"),
    "microcode": x509.ObjectIdentifier(f"{_AMD_OID}.3.8"),
}
_OID_RSASSA_PSS = x509.ObjectIdentifier("1.2.840.113549.1.1.10")


class ReportError(ValueError):
    """The evidence is not a well-formed report or certificate table."""

    def __init__(self, message: str, code: FailureCode = FailureCode.MALFORMED_EVIDENCE):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Tcb:
    """A TCB_VERSION in the Milan/Genoa layout (Turin's differs and is not supported)."""

    raw: int
    bootloader: int
    tee: int
    snp: int
    microcode: int

    @classmethod
    def from_raw(cls, raw: int) -> Tcb:
        parts = raw.to_bytes(8, "little")
        return cls(raw=raw, bootloader=parts[0], tee=parts[1], snp=parts[6], microcode=parts[7])

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw": f"{self.raw:016x}",
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }


@dataclass(frozen=True)
class SnpReport:
    """The fields of an attestation report that verification and policy use."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: Tcb
    platform_info: int
    author_key_en: bool
    mask_chip_key: bool
    signing_key: str
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: Tcb
    cpuid: tuple[int, int, int] | None
    chip_id: bytes
    committed_tcb: Tcb
    current_version: str
    committed_version: str
    launch_tcb: Tcb
    signature_r: int
    signature_s: int

    @property
    def debug_allowed(self) -> bool:
        return bool(self.policy >> _POLICY_DEBUG_BIT & 1)

    @classmethod
    def parse(cls, data: bytes) -> SnpReport:
        if len(data) != REPORT_SIZE:
            raise ReportError(f"SNP report must be {REPORT_SIZE} bytes, got {len(data)}")
        version = _u32(data, 0x00)
        if version not in SUPPORTED_VERSIONS:
            raise ReportError(
                f"SNP report version {version} is not supported (only 2 and 3)",
                FailureCode.UNSUPPORTED_VERSION,
            )
        signature_algo = _u32(data, 0x34)
        if signature_algo != 1:
            raise ReportError(
                f"SNP signature algorithm {signature_algo} is not ECDSA P-384/SHA-384",
                FailureCode.UNSUPPORTED_VERSION,
            )
        key_info = _u32(data, 0x48)
        signing_key_field = key_info >> 2 & 0b111
        if signing_key_field not in _SIGNING_KEYS:
            raise ReportError(f"SNP report SIGNING_KEY {signing_key_field} is not VCEK or VLEK")
        cpuid = (data[0x188], data[0x189], data[0x18A]) if version >= 3 else None
        return cls(
            raw=bytes(data),
            version=version,
            guest_svn=_u32(data, 0x04),
            policy=_u64(data, 0x08),
            family_id=data[0x10:0x20],
            image_id=data[0x20:0x30],
            vmpl=_u32(data, 0x30),
            signature_algo=signature_algo,
            current_tcb=Tcb.from_raw(_u64(data, 0x38)),
            platform_info=_u64(data, 0x40),
            author_key_en=bool(key_info & 1),
            mask_chip_key=bool(key_info >> 1 & 1),
            signing_key=_SIGNING_KEYS[signing_key_field],
            report_data=data[0x50:0x90],
            measurement=data[0x90:0xC0],
            host_data=data[0xC0:0xE0],
            id_key_digest=data[0xE0:0x110],
            author_key_digest=data[0x110:0x140],
            report_id=data[0x140:0x160],
            report_id_ma=data[0x160:0x180],
            reported_tcb=Tcb.from_raw(_u64(data, 0x180)),
            cpuid=cpuid,
            chip_id=data[0x1A0:0x1E0],
            committed_tcb=Tcb.from_raw(_u64(data, 0x1E0)),
            current_version=f"{data[0x1EA]}.{data[0x1E9]}.{data[0x1E8]}",
            committed_version=f"{data[0x1EE]}.{data[0x1ED]}.{data[0x1EC]}",
            launch_tcb=Tcb.from_raw(_u64(data, 0x1F0)),
            signature_r=int.from_bytes(data[0x2A0:0x2E8], "little"),
            signature_s=int.from_bytes(data[0x2E8:0x330], "little"),
        )

    def claims(self) -> dict[str, Any]:
        """The report's fields as a JSON-serialisable dict."""
        return {
            "tee_type": str(TeeType.SEV_SNP),
            "confidential": True,
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": {
                "raw": f"{self.policy:016x}",
                "abi_minor": self.policy & 0xFF,
                "abi_major": self.policy >> 8 & 0xFF,
                "smt": bool(self.policy >> 16 & 1),
                "migrate_ma": bool(self.policy >> 18 & 1),
                "debug": self.debug_allowed,
                "single_socket": bool(self.policy >> 20 & 1),
            },
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "current_tcb": self.current_tcb.to_dict(),
            "platform_info": f"{self.platform_info:016x}",
            "author_key_en": self.author_key_en,
            "mask_chip_key": self.mask_chip_key,
            "signing_key": self.signing_key,
            "report_data": self.report_data.hex(),
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "report_id_ma": self.report_id_ma.hex(),
            "reported_tcb": self.reported_tcb.to_dict(),
            "cpuid": (
                {"family": self.cpuid[0], "model": self.cpuid[1], "stepping": self.cpuid[2]}
                if self.cpuid
                else None
            ),
            "chip_id": self.chip_id.hex(),
            "committed_tcb": self.committed_tcb.to_dict(),
            "current_version": self.current_version,
            "committed_version": self.committed_version,
            "launch_tcb": self.launch_tcb.to_dict(),
        }


def parse_cert_table(blob: bytes) -> dict[uuid.UUID, bytes]:
    """Parse an extended-report certificate table into {GUID: certificate bytes}.

    The table is a list of (16-byte GUID, u32 offset, u32 length) entries ended by an
    all-zero entry; offsets count from the start of the blob. GUIDs are stored in RFC 4122
    byte order, as go-sev-guest and the kernel's configfs-tsm write them.
    """
    entries: list[tuple[uuid.UUID, int, int]] = []
    position = 0
    while True:
        if position + _CERT_TABLE_ENTRY.size > len(blob):
            raise ReportError("SNP certificate table is not terminated")
        guid, offset, length = _CERT_TABLE_ENTRY.unpack_from(blob, position)
        position += _CERT_TABLE_ENTRY.size
        if guid == bytes(16) and offset == 0 and length == 0:
            break
        if len(entries) >= _MAX_CERT_TABLE_ENTRIES:
            raise ReportError("SNP certificate table has too many entries")
        entries.append((uuid.UUID(bytes=guid), offset, length))
    table: dict[uuid.UUID, bytes] = {}
    for guid, offset, length in entries:
        if offset < position or offset + length > len(blob):
            raise ReportError(f"SNP certificate table entry {guid} points outside the table")
        table[guid] = blob[offset : offset + length]
    return table


def build_cert_table(certificates: Mapping[uuid.UUID, bytes]) -> bytes:
    """Build a certificate table: the inverse of `parse_cert_table` (tests and tools)."""
    header_size = _CERT_TABLE_ENTRY.size * (len(certificates) + 1)
    header = b""
    body = b""
    for guid, data in certificates.items():
        header += _CERT_TABLE_ENTRY.pack(guid.bytes, header_size + len(body), len(data))
        body += data
    return header + _CERT_TABLE_ENTRY.pack(bytes(16), 0, 0) + body


def vcek_cache_key(chip_id: bytes, reported_tcb: Tcb) -> str:
    """The cache key of an endorsement certificate: `<chip id hex>-<reported TCB hex>`.

    VLEK-signed reports carry an all-zero chip id, so their key is zeros plus the TCB.
    """
    return f"{chip_id.hex()}-{reported_tcb.raw:016x}"


class SnpVerifier(Verifier):
    """Verifies SEV-SNP reports.

    `vcek_cache` is where to find VCEK/VLEK certificates that the evidence does not carry:
    a mapping from `vcek_cache_key(...)` to DER or PEM bytes, or a directory holding
    `<key>.der` or `<key>.pem` files (as fetched from AMD KDS by an operator).
    """

    tee_type = TeeType.SEV_SNP
    policy_model = SnpPolicy

    def __init__(self, *, vcek_cache: Mapping[str, bytes] | Path | str | None = None) -> None:
        self.vcek_cache = Path(vcek_cache) if isinstance(vcek_cache, str) else vcek_cache

    def _verify(self, evidence: Evidence, policy: SnpPolicy, now: datetime) -> VerificationResult:
        try:
            report = SnpReport.parse(evidence.report)
        except ReportError as exc:
            return VerificationResult.failed(self.tee_type, exc.code, str(exc))
        claims = report.claims()
        failures: list[Failure] = []
        chain: list[x509.Certificate] = []
        try:
            leaf = self._endorsement_certificate(report, evidence.auxblob)
        except (ReportError, CertificateError) as exc:
            code = exc.code if isinstance(exc, ReportError) else FailureCode.CERTIFICATE_INVALID
            failures.append(Failure(code, str(exc)))
        else:
            if leaf is None:
                failures.append(
                    Failure(
                        FailureCode.CERTIFICATE_MISSING,
                        f"no {report.signing_key.upper()} certificate in the evidence or the "
                        f"cache (key {vcek_cache_key(report.chip_id, report.reported_tcb)})",
                    )
                )
            else:
                try:
                    chain = self._check_chain(report, leaf, now, failures, claims)
                except CERTIFICATE_ERRORS as exc:
                    # A certificate that parses but whose algorithms, names or extensions
                    # are malformed surfaces here, from cryptography's lazy decoding.
                    failures.append(
                        Failure(FailureCode.CERTIFICATE_INVALID, f"unusable certificate: {exc}")
                    )
        failures.extend(_check_policy(report, policy))
        return VerificationResult.from_checks(
            self.tee_type, failures, claims, [to_pem(cert) for cert in chain]
        )

    def _endorsement_certificate(
        self, report: SnpReport, auxblob: bytes | None
    ) -> x509.Certificate | None:
        guid = VCEK_GUID if report.signing_key == "vcek" else VLEK_GUID
        if auxblob:
            data = parse_cert_table(auxblob).get(guid)
            if data:
                return load_certificate(data)
        data = self._from_cache(vcek_cache_key(report.chip_id, report.reported_tcb))
        return load_certificate(data) if data else None

    def _from_cache(self, key: str) -> bytes | None:
        if self.vcek_cache is None:
            return None
        if isinstance(self.vcek_cache, Path):
            for suffix in (".der", ".pem"):
                path = self.vcek_cache / f"{key}{suffix}"
                if path.is_file():
                    return path.read_bytes()
            return None
        return self.vcek_cache.get(key)

    def _check_chain(
        self,
        report: SnpReport,
        leaf: x509.Certificate,
        now: datetime,
        failures: list[Failure],
        claims: dict[str, Any],
    ) -> list[x509.Certificate]:
        """Check leaf ← pinned intermediate ← pinned ARK and the report signature."""
        issuer = common_name(leaf.issuer)
        try:
            pinned = roots.amd_chain(issuer)
        except roots.PinnedRootError as exc:
            failures.append(Failure(FailureCode.ROOT_NOT_TRUSTED, str(exc)))
            return [leaf]
        if pinned is None:
            failures.append(
                Failure(FailureCode.ROOT_NOT_TRUSTED, f"no pinned AMD chain for issuer {issuer!r}")
            )
            return [leaf]
        chain = [leaf, pinned.intermediate, pinned.root]
        claims["product"] = pinned.product
        if pinned.signing_key != report.signing_key:
            failures.append(
                Failure(
                    FailureCode.CHAIN_INVALID,
                    f"report is signed with a {report.signing_key.upper()} but the certificate "
                    f"is a {pinned.signing_key.upper()} (issuer {issuer})",
                )
            )
        if leaf.signature_algorithm_oid != _OID_RSASSA_PSS or not isinstance(
            leaf.signature_hash_algorithm, hashes.SHA384
        ):
            failures.append(
                Failure(FailureCode.CHAIN_INVALID, "certificate is not signed with RSA-PSS SHA-384")
            )
        else:
            try:
                leaf.verify_directly_issued_by(pinned.intermediate)
            except (InvalidSignature, ValueError, TypeError):
                failures.append(
                    Failure(
                        FailureCode.CHAIN_INVALID,
                        f"{report.signing_key.upper()} certificate is not signed by {issuer}",
                    )
                )
        for cert in chain:
            if not is_valid_at(cert, now):
                failures.append(
                    Failure(
                        FailureCode.CERTIFICATE_NOT_VALID_NOW,
                        f"{describe_validity(cert)}; not at {now.isoformat()}",
                    )
                )
        failures.extend(_check_signature(report, leaf))
        failures.extend(_check_extensions(report, leaf))
        return chain


def _check_signature(report: SnpReport, leaf: x509.Certificate) -> list[Failure]:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return [Failure(FailureCode.CERTIFICATE_INVALID, "endorsement key is not ECDSA P-384")]
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return [
            Failure(
                FailureCode.SIGNATURE_INVALID,
                f"report signature does not verify with the {report.signing_key.upper()}",
            )
        ]
    return []


def _check_extensions(report: SnpReport, leaf: x509.Certificate) -> list[Failure]:
    """The certificate must be for this chip (VCEK only) and this reported TCB."""
    failures: list[Failure] = []
    certified = {name: _extension_int(leaf, oid) for name, oid in _OID_TCB.items()}
    reported = {
        "bootloader": report.reported_tcb.bootloader,
        "tee": report.reported_tcb.tee,
        "snp": report.reported_tcb.snp,
        "microcode": report.reported_tcb.microcode,
    }
    if certified != reported:
        failures.append(
            Failure(
                FailureCode.CERTIFICATE_TCB_MISMATCH,
                f"certificate TCB {certified} differs from REPORTED_TCB {reported}",
            )
        )
    if report.signing_key == "vcek":
        hwid = _extension_bytes(leaf, _OID_HWID)
        if hwid != report.chip_id:
            failures.append(
                Failure(FailureCode.CHIP_ID_MISMATCH, "VCEK hwID does not match the CHIP_ID")
            )
    return failures


def _check_policy(report: SnpReport, policy: SnpPolicy) -> list[Failure]:
    failures: list[Failure] = []
    if report.measurement.hex() not in policy.measurements:
        failures.append(
            Failure(
                FailureCode.MEASUREMENT_MISMATCH,
                f"measurement {report.measurement.hex()} is not in the policy",
            )
        )
    if report.debug_allowed and not policy.allow_debug:
        failures.append(Failure(FailureCode.DEBUG_ENABLED, "guest policy allows debugging"))
    minimum = policy.min_tcb
    tcb = report.reported_tcb
    low = [
        f"{name} {have} < {want}"
        for name, have, want in (
            ("bootloader", tcb.bootloader, minimum.bootloader),
            ("tee", tcb.tee, minimum.tee),
            ("snp", tcb.snp, minimum.snp),
            ("microcode", tcb.microcode, minimum.microcode),
        )
        if have < want
    ]
    if low:
        failures.append(Failure(FailureCode.TCB_TOO_LOW, "reported TCB too low: " + ", ".join(low)))
    if policy.host_data is not None and report.host_data.hex() != policy.host_data:
        failures.append(Failure(FailureCode.HOST_DATA_MISMATCH, "HOST_DATA differs from policy"))
    if report.vmpl not in policy.allowed_vmpls:
        failures.append(
            Failure(FailureCode.VMPL_NOT_ALLOWED, f"VMPL {report.vmpl} is not allowed by policy")
        )
    if report.signing_key not in policy.signing_keys:
        failures.append(
            Failure(
                FailureCode.SIGNING_KEY_NOT_ALLOWED,
                f"{report.signing_key.upper()}-signed reports are not allowed by policy",
            )
        )
    if policy.report_data is not None and report.report_data.hex() != policy.report_data:
        failures.append(
            Failure(FailureCode.REPORT_DATA_MISMATCH, "REPORT_DATA differs from the expected value")
        )
    return failures


def _extension_bytes(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return getattr(value, "value", None)


def _extension_int(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> int | None:
    """Decode an AMD SPL extension: a DER INTEGER with a one-byte length."""
    value = _extension_bytes(cert, oid)
    if not value or len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2:
        return None
    return int.from_bytes(value[2:], "big", signed=True)


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")
