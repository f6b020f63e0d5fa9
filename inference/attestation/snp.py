"""AMD SEV-SNP: the VCEK/VLEK chain to a pinned ARK, the report signature, and the policy.

Reports are parsed in `snp_report` (versions 2, 3 and 5; Milan, Genoa and Turin). The
endorsement key's certificate comes from the evidence (the extended report's certificate
table, which configfs-tsm calls `auxblob`) or, failing that, from an operator-supplied
cache keyed by `vcek_cache_key(chip_id, reported_tcb)`. No network is used. The issuers
are always the pinned ASK/ASVK and ARK of the product line from `roots`; any the guest
sends are ignored.

Authenticity, checked for every report whatever the policy:

- the leaf is issued by a pinned intermediate (RSA-PSS SHA-384), which the pinned ARK
  signed; the report's SIGNING_KEY matches the kind of chain (VCEK or VLEK);
- the product line agrees three ways: the chain, the certificate's productName and, from
  version 3 on, the report's CPUID (a version 2 report cannot be Turin);
- every certificate is valid at `now`; the report's ECDSA P-384 signature verifies;
- the certificate's SPL extensions equal REPORTED_TCB in the product's layout, including
  Turin's `fmcSPL`; a VCEK's hwID equals CHIP_ID (64 bytes on Milan and Genoa; on Turin
  the 8-byte hwID equals CHIP_ID's first 8 bytes and the other 56 are zero);
- an operator-supplied AMD CRL for the chain, when present, is genuine and current, and
  does not revoke the intermediate (`crl`).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
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
from .crl import check_crl, crl_name, load_crl
from .policy import ANY, SnpPolicy
from .results import Evidence, Failure, FailureCode, TeeType, VerificationResult
from .snp_report import (
    REPORT_SIZE,
    SIGNED_SIZE,
    SUPPORTED_VERSIONS,
    TURIN,
    ReportError,
    SnpReport,
    Tcb,
)

__all__ = [
    "ARK_GUID",
    "ASK_GUID",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "SUPPORTED_VERSIONS",
    "VCEK_GUID",
    "VLEK_GUID",
    "ReportError",
    "SnpReport",
    "SnpVerifier",
    "Tcb",
    "build_cert_table",
    "check_snp_policy",
    "parse_cert_table",
    "vcek_cache_key",
]

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")

_CERT_TABLE_ENTRY = struct.Struct("<16sII")
_MAX_CERT_TABLE_ENTRIES = 64

_AMD_OID = "1.3.6.1.4.1.3704.1"
_OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD_OID}.2")
_OID_HWID = x509.ObjectIdentifier(f"{_AMD_OID}.4")
_OID_CSP_ID = x509.ObjectIdentifier(f"{_AMD_OID}.5")
_OID_TCB = {
    "fmc": x509.ObjectIdentifier(f"{_AMD_OID}.3.9"),
    "bootloader": x509.ObjectIdentifier(f"{_AMD_OID}.3.1"),
    "tee": x509.ObjectIdentifier(f"{_AMD_OID}.3.2"),
    "snp": x509.ObjectIdentifier(f"{_AMD_OID}.3.3"),
    "microcode": x509.ObjectIdentifier(f"{_AMD_OID}.3.8"),
}
_OID_RSASSA_PSS = x509.ObjectIdentifier("1.2.840.113549.1.1.10")
_TURIN_HWID_SIZE = 8


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
    `<key>.der` or `<key>.pem` files (as fetched from AMD KDS by an operator). `crls` is
    where the operator's AMD CRLs are: a folder of `<product>[-vlek].crl` files or a
    mapping from those names (see `crl`).
    """

    tee_type = TeeType.SEV_SNP
    policy_model = SnpPolicy

    def __init__(
        self,
        *,
        vcek_cache: Mapping[str, bytes] | Path | str | None = None,
        crls: Mapping[str, bytes] | Path | str | None = None,
    ) -> None:
        self.vcek_cache = Path(vcek_cache) if isinstance(vcek_cache, str) else vcek_cache
        self.crls = Path(crls) if isinstance(crls, str) else crls

    def _verify(
        self, evidence: Evidence, policy: SnpPolicy | None, now: datetime
    ) -> VerificationResult:
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
                    chain = self._check_chain(report, leaf, now, policy, failures, claims)
                except CERTIFICATE_ERRORS as exc:
                    # A certificate that parses but whose algorithms, names or extensions
                    # are malformed surfaces here, from cryptography's lazy decoding.
                    failures.append(
                        Failure(FailureCode.CERTIFICATE_INVALID, f"unusable certificate: {exc}")
                    )
        if policy is not None:
            failures.extend(check_snp_policy(report, policy, claims.get("product")))
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
        policy: SnpPolicy | None,
        failures: list[Failure],
        claims: dict[str, Any],
    ) -> list[x509.Certificate]:
        """Check leaf ← pinned intermediate ← pinned ARK, the product, the signature, the
        certificate's extensions and the CRL."""
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
        failures.extend(_check_product(report, leaf, pinned.product, claims))
        failures.extend(_check_signature(report, leaf))
        failures.extend(_check_extensions(report, leaf, claims))
        crl = load_crl(self.crls, crl_name(pinned.product, pinned.signing_key))
        required = policy is not None and policy.require_crl
        failures.extend(check_crl(crl, pinned, now=now, required=required, claims=claims))
        return chain


def _check_product(
    report: SnpReport, leaf: x509.Certificate, product: str, claims: dict[str, Any]
) -> list[Failure]:
    """The chain's product line must be the certificate's and, from v3 on, the CPUID's."""
    failures: list[Failure] = []
    name = _extension_ia5(leaf, _OID_PRODUCT_NAME)
    claims["certificate_product_name"] = name
    # KDS names carry the stepping after a dash ("Milan-B0"); the line is what precedes it.
    if name is None or name.split("-")[0] != product:
        failures.append(
            Failure(
                FailureCode.PRODUCT_MISMATCH,
                f"the certificate's productName {name!r} is not the {product} line of its chain",
            )
        )
    if report.product is not None and report.product != product:
        failures.append(
            Failure(
                FailureCode.PRODUCT_MISMATCH,
                f"the report's CPUID is a {report.product} but the certificate is for {product}",
            )
        )
    if report.product is None and product == TURIN:
        failures.append(
            Failure(
                FailureCode.PRODUCT_MISMATCH,
                f"a version {report.version} report has no CPUID and cannot come from Turin",
            )
        )
    return failures


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


def _check_extensions(
    report: SnpReport, leaf: x509.Certificate, claims: dict[str, Any]
) -> list[Failure]:
    """The certificate must be for this chip (VCEK only) and this reported TCB."""
    failures: list[Failure] = []
    reported = report.reported_tcb.components()
    certified = {name: _extension_int(leaf, oid) for name, oid in _OID_TCB.items()}
    # Only Turin certificates carry fmcSPL; on the older lines it must be absent.
    if "fmc" not in reported and certified["fmc"] is None:
        del certified["fmc"]
    if certified != reported:
        failures.append(
            Failure(
                FailureCode.CERTIFICATE_TCB_MISMATCH,
                f"certificate TCB {certified} differs from REPORTED_TCB {reported}",
            )
        )
    csp_id = _extension_ia5(leaf, _OID_CSP_ID)
    if csp_id is not None:
        claims["csp_id"] = csp_id
    if report.signing_key == "vcek":
        hwid = _extension_bytes(leaf, _OID_HWID)
        if report.is_turin:
            matches = (
                hwid is not None
                and len(hwid) == _TURIN_HWID_SIZE
                and report.chip_id[:_TURIN_HWID_SIZE] == hwid
                and not any(report.chip_id[_TURIN_HWID_SIZE:])
            )
        else:
            matches = hwid == report.chip_id
        if not matches:
            failures.append(
                Failure(FailureCode.CHIP_ID_MISMATCH, "VCEK hwID does not match the CHIP_ID")
            )
    return failures


def check_snp_policy(report: SnpReport, policy: SnpPolicy, product: str | None) -> list[Failure]:
    """Every policy field against the report. `product` is the verified product line (from
    the chain); without one the report's CPUID stands in."""
    product = product or report.product
    failures: list[Failure] = []

    def fail(code: FailureCode, message: str) -> None:
        failures.append(Failure(code, message))

    if report.measurement.hex() not in policy.measurements:
        fail(
            FailureCode.MEASUREMENT_MISMATCH,
            f"measurement {report.measurement.hex()} is not in the policy",
        )
    # Without a product line no chain was verified (a version 2 report names none itself);
    # that failure is reported already, and there is nothing to judge the TCB by.
    if product is not None:
        failures.extend(_check_min_tcb(report, policy, product))
    if policy.min_firmware is not None:
        wanted = _version_tuple(policy.min_firmware)
        for name, have in (
            ("current", report.current_firmware),
            ("committed", report.committed_firmware),
        ):
            if have[: len(wanted)] < wanted:
                fail(
                    FailureCode.FIRMWARE_TOO_OLD,
                    f"{name} firmware {'.'.join(map(str, have))} < {policy.min_firmware}",
                )
    if policy.min_abi is not None and report.abi < _version_tuple(policy.min_abi):
        fail(
            FailureCode.ABI_TOO_OLD,
            f"guest policy ABI {report.abi[0]}.{report.abi[1]} < {policy.min_abi}",
        )
    if report.vmpl not in policy.allowed_vmpls:
        fail(FailureCode.VMPL_NOT_ALLOWED, f"VMPL {report.vmpl} is not allowed by policy")
    if report.signing_key not in policy.signing_keys:
        fail(
            FailureCode.SIGNING_KEY_NOT_ALLOWED,
            f"{report.signing_key.upper()}-signed reports are not allowed by policy",
        )
    if report.debug_allowed and not policy.allow_debug:
        fail(FailureCode.DEBUG_ENABLED, "guest policy allows debugging")
    for bit, allowed, what in (
        ("migrate_ma", policy.allow_migration_agent, "allows a migration agent"),
        ("smt", policy.allow_smt, "allows SMT"),
        ("cxl_allow", policy.allow_cxl, "allows CXL memory"),
    ):
        if report.policy_bit(bit) and not allowed:
            fail(FailureCode.GUEST_POLICY_NOT_ALLOWED, f"guest policy {what}")
    for bit, required, what in (
        ("single_socket", policy.require_single_socket, "SINGLE_SOCKET"),
        ("ciphertext_hiding_dram", policy.require_ciphertext_hiding, "CIPHERTEXT_HIDING_DRAM"),
    ):
        if required and not report.policy_bit(bit):
            fail(FailureCode.GUEST_POLICY_NOT_ALLOWED, f"guest policy does not set {what}")
    missing_info = [
        name for name in policy.required_platform_info if not report.platform_info_bit(name)
    ]
    if missing_info:
        fail(
            FailureCode.PLATFORM_INFO_MISSING,
            "PLATFORM_INFO lacks " + ", ".join(missing_info),
        )
    if (
        policy.id_key_digests is not None
        and report.id_key_digest.hex() not in policy.id_key_digests
    ):
        fail(FailureCode.ID_KEY_NOT_ALLOWED, "ID_KEY_DIGEST is not in the policy")
    if (
        policy.author_key_digests is not None
        and report.author_key_digest.hex() not in policy.author_key_digests
    ):
        fail(FailureCode.AUTHOR_KEY_NOT_ALLOWED, "AUTHOR_KEY_DIGEST is not in the policy")
    if report.guest_svn < policy.min_guest_svn:
        fail(
            FailureCode.GUEST_SVN_TOO_LOW,
            f"GUEST_SVN {report.guest_svn} < {policy.min_guest_svn}",
        )
    if policy.host_data is not None and report.host_data.hex() != policy.host_data:
        fail(FailureCode.HOST_DATA_MISMATCH, "HOST_DATA differs from policy")
    if policy.family_id is not None and report.family_id.hex() != policy.family_id:
        fail(FailureCode.FAMILY_ID_MISMATCH, "FAMILY_ID differs from policy")
    if policy.image_id is not None and report.image_id.hex() != policy.image_id:
        fail(FailureCode.IMAGE_ID_MISMATCH, "IMAGE_ID differs from policy")
    for name, required, vector in (
        ("LAUNCH_MIT_VECTOR", policy.required_launch_mitigations, report.launch_mit_vector),
        ("CURRENT_MIT_VECTOR", policy.required_current_mitigations, report.current_mit_vector),
    ):
        if required is None:
            continue
        if vector is None:
            fail(
                FailureCode.MITIGATION_MISSING,
                f"a version {report.version} report has no {name} (version 5 has)",
            )
        elif vector & required != required:
            fail(
                FailureCode.MITIGATION_MISSING,
                f"{name} {vector:#x} lacks required mitigations {required & ~vector:#x}",
            )
    if policy.report_data is not None and report.report_data.hex() != policy.report_data:
        fail(FailureCode.REPORT_DATA_MISMATCH, "REPORT_DATA differs from the expected value")
    return failures


def _check_min_tcb(report: SnpReport, policy: SnpPolicy, product: str) -> list[Failure]:
    minimum = policy.min_tcb.for_product(product)
    if minimum is None:
        return [
            Failure(
                FailureCode.PRODUCT_NOT_ALLOWED,
                f"product line {product} is not in the policy's min_tcb "
                f"({', '.join(policy.min_tcb.products())})",
            )
        ]
    reported = report.reported_tcb.components()
    low = [
        f"{name} {reported.get(name)} < {want}"
        for name, want in minimum.minimums().items()
        if want != ANY and (reported.get(name) is None or reported[name] < want)
    ]
    if low:
        return [
            Failure(FailureCode.TCB_TOO_LOW, f"{product} REPORTED_TCB too low: " + ", ".join(low))
        ]
    return []


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


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


def _extension_ia5(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    """Decode an AMD text extension (productName, csp_id): a DER IA5String."""
    value = _extension_bytes(cert, oid)
    if not value or len(value) < 2 or value[0] != 0x16 or value[1] != len(value) - 2:
        return None
    try:
        return value[2:].decode("ascii")
    except UnicodeDecodeError:
        return None
