"""The shapes every verifier shares: TEE types, evidence, failure reasons and the result.

Everything here is plain data so that the Django side can store a result as JSON
(`VerificationResult.to_dict()`) and rebuild it (`VerificationResult.from_dict()`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TeeType(StrEnum):
    """The kind of trusted execution environment a backend runs in."""

    NONE = "none"
    SEV_SNP = "sev_snp"
    TDX = "tdx"

    @classmethod
    def from_provider(cls, provider: str) -> TeeType:
        """Map the agent's `provider` name ("none", "sev-snp", "tdx") to a TEE type."""
        try:
            return _PROVIDER_TO_TEE[provider]
        except KeyError:
            raise ValueError(f"unknown attestation provider {provider!r}") from None

    @property
    def provider(self) -> str:
        """The agent's name for this TEE type, as sent in its `/attestation` reply."""
        return _TEE_TO_PROVIDER[self]


_PROVIDER_TO_TEE = {"none": TeeType.NONE, "sev-snp": TeeType.SEV_SNP, "tdx": TeeType.TDX}
_TEE_TO_PROVIDER = {tee: provider for provider, tee in _PROVIDER_TO_TEE.items()}


class FailureCode(StrEnum):
    """Machine-readable reasons a verification failed."""

    INVALID_ARGUMENT = "invalid_argument"
    INVALID_POLICY = "invalid_policy"
    WRONG_TEE_TYPE = "wrong_tee_type"
    MALFORMED_EVIDENCE = "malformed_evidence"
    UNSUPPORTED_VERSION = "unsupported_version"
    CERTIFICATE_MISSING = "certificate_missing"
    CERTIFICATE_INVALID = "certificate_invalid"
    CERTIFICATE_NOT_VALID_NOW = "certificate_not_valid_now"
    CHAIN_INVALID = "chain_invalid"
    ROOT_NOT_TRUSTED = "root_not_trusted"
    SIGNATURE_INVALID = "signature_invalid"
    CHIP_ID_MISMATCH = "chip_id_mismatch"
    CERTIFICATE_TCB_MISMATCH = "certificate_tcb_mismatch"
    SIGNING_KEY_NOT_ALLOWED = "signing_key_not_allowed"
    COLLATERAL_MISSING = "collateral_missing"
    COLLATERAL_INVALID = "collateral_invalid"
    COLLATERAL_NOT_VALID_NOW = "collateral_not_valid_now"
    QUOTE_INVALID = "quote_invalid"
    TCB_STATUS_NOT_ACCEPTED = "tcb_status_not_accepted"
    MEASUREMENT_MISMATCH = "measurement_mismatch"
    RTMR_MISMATCH = "rtmr_mismatch"
    DEBUG_ENABLED = "debug_enabled"
    TCB_TOO_LOW = "tcb_too_low"
    HOST_DATA_MISMATCH = "host_data_mismatch"
    VMPL_NOT_ALLOWED = "vmpl_not_allowed"
    REPORT_DATA_MISMATCH = "report_data_mismatch"
    INSECURE_NOT_ALLOWED = "insecure_not_allowed"
    INTERNAL_ERROR = "internal_error"
    # SEV-SNP: the product line and AMD's revocation lists.
    UNKNOWN_PRODUCT = "unknown_product"
    PRODUCT_MISMATCH = "product_mismatch"
    CRL_MISSING = "crl_missing"
    CRL_INVALID = "crl_invalid"
    CERTIFICATE_REVOKED = "certificate_revoked"
    # SEV-SNP policy fields.
    PRODUCT_NOT_ALLOWED = "product_not_allowed"
    FIRMWARE_TOO_OLD = "firmware_too_old"
    ABI_TOO_OLD = "abi_too_old"
    GUEST_POLICY_NOT_ALLOWED = "guest_policy_not_allowed"
    PLATFORM_INFO_MISSING = "platform_info_missing"
    ID_KEY_NOT_ALLOWED = "id_key_not_allowed"
    AUTHOR_KEY_NOT_ALLOWED = "author_key_not_allowed"
    GUEST_SVN_TOO_LOW = "guest_svn_too_low"
    FAMILY_ID_MISMATCH = "family_id_mismatch"
    IMAGE_ID_MISMATCH = "image_id_mismatch"
    MITIGATION_MISSING = "mitigation_missing"
    # TDX policy fields.
    TD_IDENTITY_MISMATCH = "td_identity_mismatch"
    XFAM_MISMATCH = "xfam_mismatch"
    TD_ATTRIBUTES_MISMATCH = "td_attributes_mismatch"
    TEE_TCB_SVN_TOO_LOW = "tee_tcb_svn_too_low"
    ADVISORY_NOT_ACCEPTED = "advisory_not_accepted"
    # The challenge itself, as run by the platform (`inference.attestation.challenge`), before or around
    # the hardware verification.
    AGENT_UNREACHABLE = "agent_unreachable"
    AGENT_ERROR = "agent_error"
    MALFORMED_REPLY = "malformed_reply"
    NONCE_MISMATCH = "nonce_mismatch"
    BINDING_MISMATCH = "binding_mismatch"
    TLS_KEY_MISMATCH = "tls_key_mismatch"
    NO_POLICY = "no_policy"


@dataclass(frozen=True)
class Failure:
    """One reason a verification failed: a stable code and a message for people."""

    code: FailureCode
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message}


@dataclass(frozen=True)
class Evidence:
    """Hardware evidence as collected by the agent.

    `report` is the SEV-SNP attestation report or the TDX quote. For `none` it holds the
    agent's self-reported 64-byte report data, which no hardware vouches for.
    `auxblob` is, for SEV-SNP, the certificate table of the extended report (configfs-tsm
    `auxblob`, GUID-table format) and, for TDX, the quote's collateral as dcap-qvl
    `QuoteCollateralV3` JSON. Either may be absent; the verifiers then look in the
    operator-supplied cache they were built with.
    """

    tee_type: TeeType
    report: bytes = b""
    auxblob: bytes | None = None


@dataclass
class VerificationResult:
    """The outcome of verifying evidence against a policy.

    `claims` is JSON-serialisable (hex strings, ints, bools). It is filled in as far as the
    evidence could be parsed, even when verification failed, so an operator can read the
    measurement of a new backend from a failed result; only `ok` says the claims are
    authentic and meet the policy.
    """

    tee_type: TeeType
    ok: bool
    failures: list[Failure] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)
    cert_chain: list[str] = field(default_factory=list)

    @classmethod
    def from_checks(
        cls,
        tee_type: TeeType,
        failures: list[Failure],
        claims: dict[str, Any] | None = None,
        cert_chain: list[str] | None = None,
    ) -> VerificationResult:
        """Build a result that passes exactly when no check failed."""
        return cls(
            tee_type=tee_type,
            ok=not failures,
            failures=list(failures),
            claims=claims or {},
            cert_chain=cert_chain or [],
        )

    @classmethod
    def failed(cls, tee_type: TeeType, code: FailureCode, message: str) -> VerificationResult:
        return cls(tee_type=tee_type, ok=False, failures=[Failure(code, message)])

    @property
    def reasons(self) -> list[str]:
        """The failure messages, for logs and admin pages."""
        return [f"{failure.code}: {failure.message}" for failure in self.failures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tee_type": str(self.tee_type),
            "ok": self.ok,
            "failures": [failure.to_dict() for failure in self.failures],
            "claims": self.claims,
            "cert_chain": list(self.cert_chain),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerificationResult:
        return cls(
            tee_type=TeeType(data["tee_type"]),
            ok=bool(data["ok"]),
            failures=[
                Failure(FailureCode(item["code"]), item["message"]) for item in data["failures"]
            ],
            claims=dict(data["claims"]),
            cert_chain=list(data["cert_chain"]),
        )
