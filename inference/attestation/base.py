"""The `Verifier` base class: argument checks and the guarantee that nothing escapes.

Subclasses implement `_verify` for one TEE type. `verify` validates the policy and `now`,
checks the evidence is of the right TEE type, and turns any exception raised while
handling hostile input into a failed result, so a caller can never mistake a crash for a
pass and never has to wrap the call itself. `verify_genuine` does the same with no policy:
it answers only whether the evidence is authentic and current (for auditors and the
offline `verify_evidence` command); the platform always verifies under a policy.
"""

from __future__ import annotations

import abc
import logging
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from .results import Evidence, FailureCode, TeeType, VerificationResult

logger = logging.getLogger(__name__)


class Verifier(abc.ABC):
    """Verifies one TEE type's evidence against that type's policy model."""

    tee_type: ClassVar[TeeType]
    policy_model: ClassVar[type[BaseModel]]

    def verify(
        self, evidence: Evidence, policy: BaseModel | dict[str, Any], *, now: datetime
    ) -> VerificationResult:
        """Verify `evidence` against `policy` as of `now` (an aware datetime)."""
        if policy is None:
            return VerificationResult.failed(
                self.tee_type, FailureCode.INVALID_POLICY, "a policy is required"
            )
        return self._checked(evidence, policy, now)

    def verify_genuine(self, evidence: Evidence, *, now: datetime) -> VerificationResult:
        """Whether `evidence` is authentic and current as of `now`, under no policy."""
        return self._checked(evidence, None, now)

    def _checked(
        self, evidence: Evidence, policy: BaseModel | dict[str, Any] | None, now: datetime
    ) -> VerificationResult:
        if not isinstance(now, datetime) or now.tzinfo is None:
            return VerificationResult.failed(
                self.tee_type, FailureCode.INVALID_ARGUMENT, "now must be an aware datetime"
            )
        if not isinstance(evidence, Evidence):
            return VerificationResult.failed(
                self.tee_type, FailureCode.INVALID_ARGUMENT, "evidence must be an Evidence"
            )
        if evidence.tee_type != self.tee_type:
            return VerificationResult.failed(
                self.tee_type,
                FailureCode.WRONG_TEE_TYPE,
                f"evidence is {evidence.tee_type}, this backend expects {self.tee_type}",
            )
        try:
            checked = (
                policy
                if policy is None or isinstance(policy, self.policy_model)
                else self.policy_model.model_validate(policy)
            )
        except ValidationError as exc:
            return VerificationResult.failed(
                self.tee_type, FailureCode.INVALID_POLICY, f"invalid {self.tee_type} policy: {exc}"
            )
        try:
            return self._verify(evidence, checked, now)
        except Exception:
            # Parsers of hostile input can fail in ways nobody listed; whatever happened,
            # the answer must be "not verified", and the traceback belongs in the log.
            logger.exception("attestation verifier %s crashed", type(self).__name__)
            return VerificationResult.failed(
                self.tee_type, FailureCode.INTERNAL_ERROR, "verifier error; see the server log"
            )

    @abc.abstractmethod
    def _verify(self, evidence: Evidence, policy: Any, now: datetime) -> VerificationResult:
        """Verify evidence of this verifier's TEE type, under `policy` unless it is None;
        may raise on malformed input."""
