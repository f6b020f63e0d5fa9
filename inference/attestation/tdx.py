"""Intel TDX: DCAP quote verification with dcap-qvl, then the policy.

dcap-qvl checks the quote signature, the QE report, the PCK chain up to the pinned Intel
SGX Root CA, the CRLs and the TCB Info/QE Identity collateral as of `now`, and returns the
platform's TCB status. We parse the TD report ourselves for the claims and the policy
(quote v4: TD report 1.0 at offset 48; v5: a body type and size at 48, the body at 54).

The collateral (dcap-qvl `QuoteCollateralV3` JSON, as served by a PCCS) comes from the
evidence's `auxblob` or from an operator-supplied cache keyed by the quote's FMSPC. It is
all signed by Intel, so any source will do; no network is used.

`check_tdx_policy` then judges the TD report, the TCB status and the advisories against the
policy: MRTD, RTMRs, MRCONFIGID/MROWNER/MROWNERCONFIG, XFAM, TD_ATTRIBUTES (SEPT_VE_DISABLE
and DEBUG), the minimum TEE_TCB_SVN, and the accepted statuses and advisories.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dcap_qvl

from . import roots
from .base import Verifier
from .policy import ANY, TD_ATTRIBUTE_DEBUG, TD_ATTRIBUTE_SEPT_VE_DISABLE, TdxPolicy
from .results import Evidence, Failure, FailureCode, TeeType, VerificationResult

HEADER_SIZE = 48
TEE_TYPE_TDX = 0x81
TD_REPORT_10_SIZE = 584
TD_REPORT_15_SIZE = 648
# Quote v5 body types that carry a TD report, and the report size each implies.
_V5_BODY_SIZES = {2: TD_REPORT_10_SIZE, 3: TD_REPORT_15_SIZE}
_MAX_COLLATERAL_SIZE = 1 << 20

# Offsets inside the TD report body (Intel TDX DCAP quote layout).
_TD_FIELDS = {
    "tee_tcb_svn": (0, 16),
    "mr_seam": (16, 48),
    "mr_signer_seam": (64, 48),
    "seam_attributes": (112, 8),
    "td_attributes": (120, 8),
    "xfam": (128, 8),
    "mr_td": (136, 48),
    "mr_config_id": (184, 48),
    "mr_owner": (232, 48),
    "mr_owner_config": (280, 48),
    "rtmr0": (328, 48),
    "rtmr1": (376, 48),
    "rtmr2": (424, 48),
    "rtmr3": (472, 48),
    "report_data": (520, 64),
}
_TD_15_FIELDS = {"tee_tcb_svn2": (584, 16), "mr_service_td": (600, 48)}

_TD_ATTRIBUTE_PKS = 1 << 30
_TD_ATTRIBUTE_KL = 1 << 31
_TD_ATTRIBUTE_PERFMON = 1 << 63


class QuoteError(ValueError):
    """The evidence is not a TDX quote we can read."""

    def __init__(self, message: str, code: FailureCode = FailureCode.MALFORMED_EVIDENCE):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TdxQuote:
    """The header fields and TD report of a TDX quote, parsed without verification."""

    version: int
    attestation_key_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    td_report: dict[str, bytes]

    @property
    def td_attributes(self) -> int:
        return int.from_bytes(self.td_report["td_attributes"], "little")

    @classmethod
    def parse(cls, data: bytes) -> TdxQuote:
        if len(data) < HEADER_SIZE:
            raise QuoteError(f"TDX quote is {len(data)} bytes, shorter than its header")
        version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", data, 0)
        if tee_type != TEE_TYPE_TDX:
            raise QuoteError(f"quote TEE type is {tee_type:#x}, not TDX ({TEE_TYPE_TDX:#x})")
        if version == 4:
            offset, size = HEADER_SIZE, TD_REPORT_10_SIZE
        elif version == 5:
            if len(data) < HEADER_SIZE + 6:
                raise QuoteError("TDX v5 quote is too short for its body header")
            body_type, body_size = struct.unpack_from("<HI", data, HEADER_SIZE)
            size = _V5_BODY_SIZES.get(body_type, 0)
            if not size or body_size != size:
                raise QuoteError(
                    f"TDX v5 quote body type {body_type} (size {body_size}) is not a TD report",
                    FailureCode.UNSUPPORTED_VERSION,
                )
            offset = HEADER_SIZE + 6
        else:
            raise QuoteError(
                f"TDX quote version {version} is not supported (only 4 and 5)",
                FailureCode.UNSUPPORTED_VERSION,
            )
        if len(data) < offset + size:
            raise QuoteError(f"TDX quote is truncated: {len(data)} bytes")
        body = data[offset : offset + size]
        fields = dict(_TD_FIELDS)
        if size == TD_REPORT_15_SIZE:
            fields.update(_TD_15_FIELDS)
        return cls(
            version=version,
            attestation_key_type=key_type,
            qe_svn=qe_svn,
            pce_svn=pce_svn,
            qe_vendor_id=data[12:28],
            td_report={name: body[start : start + n] for name, (start, n) in fields.items()},
        )

    def claims(self) -> dict[str, Any]:
        attributes = self.td_attributes
        return {
            "tee_type": str(TeeType.TDX),
            "confidential": True,
            "quote_version": self.version,
            "attestation_key_type": self.attestation_key_type,
            "qe_svn": self.qe_svn,
            "pce_svn": self.pce_svn,
            "qe_vendor_id": self.qe_vendor_id.hex(),
            **{name: value.hex() for name, value in self.td_report.items()},
            "td_attributes_bits": {
                "debug": bool(attributes & TD_ATTRIBUTE_DEBUG),
                "sept_ve_disable": bool(attributes & TD_ATTRIBUTE_SEPT_VE_DISABLE),
                "pks": bool(attributes & _TD_ATTRIBUTE_PKS),
                "kl": bool(attributes & _TD_ATTRIBUTE_KL),
                "perfmon": bool(attributes & _TD_ATTRIBUTE_PERFMON),
            },
            # Measurement under the same name as SEV-SNP, so callers can show one column.
            "measurement": self.td_report["mr_td"].hex(),
        }


class TdxVerifier(Verifier):
    """Verifies TDX quotes.

    `collateral_cache` supplies collateral the evidence does not carry: a mapping from the
    quote's FMSPC (upper-case hex) to `QuoteCollateralV3` JSON, or a directory of
    `<FMSPC>.json` files.
    """

    tee_type = TeeType.TDX
    policy_model = TdxPolicy

    def __init__(self, *, collateral_cache: Mapping[str, str] | Path | str | None = None) -> None:
        self.collateral_cache = (
            Path(collateral_cache) if isinstance(collateral_cache, str) else collateral_cache
        )

    def _verify(
        self, evidence: Evidence, policy: TdxPolicy | None, now: datetime
    ) -> VerificationResult:
        try:
            quote = TdxQuote.parse(evidence.report)
        except QuoteError as exc:
            return VerificationResult.failed(self.tee_type, exc.code, str(exc))
        claims = quote.claims()
        failures: list[Failure] = []
        cert_chain: list[str] = []
        try:
            parsed = dcap_qvl.parse_quote(evidence.report)
            claims["fmspc"] = parsed.fmspc()
            claims["pck_ca"] = parsed.ca()
            chain_pem = parsed.cert_chain_pem_bytes()
        except ValueError as exc:
            return VerificationResult.failed(
                self.tee_type, FailureCode.MALFORMED_EVIDENCE, f"dcap-qvl cannot parse quote: {exc}"
            )
        if chain_pem:
            cert_chain = _split_pem(chain_pem.decode("ascii", errors="replace"))
        collateral_json = self._collateral_json(evidence.auxblob, claims["fmspc"])
        if collateral_json is None:
            failures.append(
                Failure(
                    FailureCode.COLLATERAL_MISSING,
                    f"no collateral in the evidence or the cache for FMSPC {claims['fmspc']}",
                )
            )
        else:
            failures.extend(self._check_quote(evidence.report, collateral_json, now, claims))
        if policy is not None:
            failures.extend(
                check_tdx_policy(
                    quote, policy, claims.get("tcb_status"), claims.get("advisory_ids", [])
                )
            )
        return VerificationResult.from_checks(self.tee_type, failures, claims, cert_chain)

    def _collateral_json(self, auxblob: bytes | None, fmspc: str) -> str | None:
        if auxblob:
            return auxblob.decode("utf-8", errors="replace")
        if self.collateral_cache is None:
            return None
        if isinstance(self.collateral_cache, Path):
            path = self.collateral_cache / f"{fmspc.upper()}.json"
            return path.read_text(encoding="utf-8") if path.is_file() else None
        return self.collateral_cache.get(fmspc.upper())

    def _check_quote(
        self, quote: bytes, collateral_json: str, now: datetime, claims: dict[str, Any]
    ) -> list[Failure]:
        if len(collateral_json) > _MAX_COLLATERAL_SIZE:
            return [Failure(FailureCode.COLLATERAL_INVALID, "collateral is too large")]
        try:
            collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
        except ValueError as exc:
            return [Failure(FailureCode.COLLATERAL_INVALID, f"collateral is not valid: {exc}")]
        try:
            root_der = roots.intel_root_der()
        except roots.PinnedRootError as exc:
            return [Failure(FailureCode.ROOT_NOT_TRUSTED, str(exc))]
        try:
            report = dcap_qvl.verify_with_root_ca(quote, collateral, root_der, int(now.timestamp()))
        except ValueError as exc:
            return [Failure(_classify_dcap_error(str(exc)), str(exc))]
        claims["tcb_status"] = report.status
        claims["advisory_ids"] = list(report.advisory_ids)
        return []


def check_tdx_policy(
    quote: TdxQuote, policy: TdxPolicy, tcb_status: str | None, advisory_ids: list[str]
) -> list[Failure]:
    """Every policy field against the TD report, and dcap-qvl's TCB status and advisories
    (None and [] when the quote could not be verified, which has failed already)."""
    failures: list[Failure] = []

    def fail(code: FailureCode, message: str) -> None:
        failures.append(Failure(code, message))

    td = quote.td_report
    if td["mr_td"].hex() not in policy.mrtds:
        fail(FailureCode.MEASUREMENT_MISMATCH, f"MRTD {td['mr_td'].hex()} is not in the policy")
    for name in ("rtmr0", "rtmr1", "rtmr2", "rtmr3"):
        expected = getattr(policy, name)
        if expected is not None and td[name].hex() != expected:
            fail(FailureCode.RTMR_MISMATCH, f"{name.upper()} differs from the policy")
    for name, field in (
        ("mrconfigid", "mr_config_id"),
        ("mrowner", "mr_owner"),
        ("mrownerconfig", "mr_owner_config"),
    ):
        expected = getattr(policy, name)
        if expected is not None and td[field].hex() != expected:
            fail(FailureCode.TD_IDENTITY_MISMATCH, f"{name.upper()} differs from the policy")
    if policy.xfam is not None and td["xfam"].hex() != policy.xfam:
        fail(FailureCode.XFAM_MISMATCH, f"XFAM {td['xfam'].hex()} is not {policy.xfam}")
    attributes = quote.td_attributes
    if policy.td_attributes is not None and td["td_attributes"].hex() != policy.td_attributes:
        fail(
            FailureCode.TD_ATTRIBUTES_MISMATCH,
            f"TD_ATTRIBUTES {td['td_attributes'].hex()} is not {policy.td_attributes}",
        )
    if policy.require_sept_ve_disable and not attributes & TD_ATTRIBUTE_SEPT_VE_DISABLE:
        fail(
            FailureCode.TD_ATTRIBUTES_MISMATCH,
            "TD_ATTRIBUTES lacks SEPT_VE_DISABLE: the host could inject #VE on EPT violations",
        )
    if attributes & TD_ATTRIBUTE_DEBUG and not policy.allow_debug:
        fail(FailureCode.DEBUG_ENABLED, "TD attributes have DEBUG set")
    if policy.min_tee_tcb_svn is not None:
        minimum = bytes.fromhex(policy.min_tee_tcb_svn)
        low = [
            f"component {index} {have} < {want}"
            for index, (have, want) in enumerate(zip(td["tee_tcb_svn"], minimum, strict=True))
            if have < want
        ]
        if low:
            fail(FailureCode.TEE_TCB_SVN_TOO_LOW, "TEE_TCB_SVN too low: " + ", ".join(low))
    if policy.report_data is not None and td["report_data"].hex() != policy.report_data:
        fail(FailureCode.REPORT_DATA_MISMATCH, "REPORT_DATA differs from the expected value")
    if tcb_status is not None and tcb_status not in policy.accepted_tcb_statuses:
        fail(
            FailureCode.TCB_STATUS_NOT_ACCEPTED,
            f"TCB status {tcb_status} is not in {policy.accepted_tcb_statuses}",
        )
    if policy.accepted_advisories != ANY:
        unaccepted = [item for item in advisory_ids if item not in policy.accepted_advisories]
        if unaccepted:
            fail(
                FailureCode.ADVISORY_NOT_ACCEPTED,
                f"the platform is exposed to {', '.join(unaccepted)}, which the policy does "
                "not accept",
            )
    return failures


def _classify_dcap_error(message: str) -> FailureCode:
    """Pick a failure code for a dcap-qvl error; its text is the only detail it gives.

    An unrecognised message still fails, as `quote_invalid`.
    """
    lowered = message.lower()
    if "expired" in lowered or "in the future" in lowered:
        return FailureCode.COLLATERAL_NOT_VALID_NOW
    if "tcb level" in lowered or "revoked" in lowered:
        return FailureCode.TCB_STATUS_NOT_ACCEPTED
    if "signature" in lowered:
        return FailureCode.SIGNATURE_INVALID
    return FailureCode.QUOTE_INVALID


def _split_pem(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + marker + "\n" for part in text.split(marker) if part.strip()]
