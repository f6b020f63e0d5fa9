"""Choosing the verifier for a backend's TEE type.

`verify_evidence` is the one call the rest of the platform needs. It uses verifiers with
no caches unless `configure()` installed others (for instance with the operator's VCEK
and collateral directories from settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from .base import Verifier
from .insecure import NoneVerifier
from .results import Evidence, FailureCode, TeeType, VerificationResult
from .snp import SnpVerifier
from .tdx import TdxVerifier

_verifiers: dict[TeeType, Verifier] = {
    TeeType.NONE: NoneVerifier(),
    TeeType.SEV_SNP: SnpVerifier(),
    TeeType.TDX: TdxVerifier(),
}


def configure(verifiers: Mapping[TeeType, Verifier]) -> None:
    """Replace the verifiers used by `verify_evidence` for the given TEE types."""
    for tee_type, verifier in verifiers.items():
        if verifier.tee_type != tee_type:
            raise ValueError(f"{type(verifier).__name__} does not verify {tee_type}")
        _verifiers[tee_type] = verifier


def verifier_for(tee_type: TeeType | str) -> Verifier:
    return _verifiers[TeeType(tee_type)]


def verify_evidence(
    tee_type: TeeType | str,
    evidence: Evidence,
    policy: BaseModel | dict[str, Any],
    *,
    now: datetime,
) -> VerificationResult:
    """Verify `evidence` for a backend of `tee_type` under `policy`, as of `now`.

    `tee_type` is the backend's configured type, never the one the agent claims. `policy`
    is that type's policy model or its JSON dict. Never raises; any problem is a failure.
    """
    try:
        checked_type = TeeType(tee_type)
    except ValueError:
        return VerificationResult.failed(
            TeeType.NONE, FailureCode.INVALID_ARGUMENT, f"unknown TEE type {tee_type!r}"
        )
    return _verifiers[checked_type].verify(evidence, policy, now=now)


def verify_genuine(
    tee_type: TeeType | str, evidence: Evidence, *, now: datetime
) -> VerificationResult:
    """Whether `evidence` is authentic and current as of `now`, applying no policy.

    For auditors (the offline `verify_evidence` command): the claims say what the hardware
    vouches for, and `ok` only that it does. Never raises.
    """
    try:
        checked_type = TeeType(tee_type)
    except ValueError:
        return VerificationResult.failed(
            TeeType.NONE, FailureCode.INVALID_ARGUMENT, f"unknown TEE type {tee_type!r}"
        )
    return _verifiers[checked_type].verify_genuine(evidence, now=now)
