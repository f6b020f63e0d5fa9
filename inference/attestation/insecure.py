"""The `none` verifier, for a backend that runs outside any TEE (the development agent).

It never looks at hardware, because there is none. It passes only when the backend's
policy explicitly sets `allow_insecure: true`, and its claims always say
`confidential: false` so that every response from such a backend can say so too.
"""

from __future__ import annotations

from datetime import datetime

from .base import Verifier
from .policy import NonePolicy
from .results import Evidence, Failure, FailureCode, TeeType, VerificationResult


class NoneVerifier(Verifier):
    """Accepts a non-confidential backend only under an explicit opt-in."""

    tee_type = TeeType.NONE
    policy_model = NonePolicy

    def _verify(
        self, evidence: Evidence, policy: NonePolicy | None, now: datetime
    ) -> VerificationResult:
        # The agent's own report data is passed on so that the TLS key binding can still be
        # checked in development, but it is self-asserted: nothing vouches for it.
        claims = {
            "tee_type": str(TeeType.NONE),
            "confidential": False,
            "report_data": evidence.report.hex() if evidence.report else None,
        }
        failures = []
        if policy is None:
            failures.append(
                Failure(FailureCode.INSECURE_NOT_ALLOWED, "no hardware vouches for this evidence")
            )
        elif not policy.allow_insecure:
            failures.append(
                Failure(
                    FailureCode.INSECURE_NOT_ALLOWED,
                    "backend is not confidential and its policy does not set allow_insecure",
                )
            )
        return VerificationResult.from_checks(self.tee_type, failures, claims)
