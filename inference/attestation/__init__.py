"""Attestation verification for TEE backends: AMD SEV-SNP, Intel TDX and `none`.

Pure Python (cryptography, dcap-qvl, pydantic); no Django, no network. The platform calls

    result = verify_evidence(backend.tee_type, evidence, policy, now=timezone.now())

and gets a `VerificationResult` (`ok`, `failures`, `claims`, `cert_chain`) that it can
store as JSON. `verify_genuine` checks authenticity alone (auditors, the offline
`verify_evidence` command); `policy_review` says which policy fields are pinned or open. Evidence usually comes from the agent's `/attestation` reply through
`parse_agent_reply`; the nonce and TLS key binding is described in `binding`.
"""

from .agent import AgentReply, AgentReplyError, parse_agent_reply
from .base import Verifier
from .binding import check_binding, report_data_for, spki_of_certificate
from .dispatch import configure, verifier_for, verify_evidence, verify_genuine
from .insecure import NoneVerifier
from .policy import (
    NonePolicy,
    Policy,
    SnpMinTcb,
    SnpPolicy,
    SnpTcb,
    TdxPolicy,
    TurinTcb,
    policy_from_json,
)
from .results import Evidence, Failure, FailureCode, TeeType, VerificationResult
from .review import FieldReview, policy_review
from .roots import PinnedRootError, check_pinned_roots
from .snp import SnpReport, SnpVerifier, vcek_cache_key
from .tdx import TdxQuote, TdxVerifier

__all__ = [
    "AgentReply",
    "AgentReplyError",
    "Evidence",
    "Failure",
    "FailureCode",
    "FieldReview",
    "NonePolicy",
    "NoneVerifier",
    "PinnedRootError",
    "Policy",
    "SnpMinTcb",
    "SnpPolicy",
    "SnpReport",
    "SnpTcb",
    "SnpVerifier",
    "TdxPolicy",
    "TdxQuote",
    "TdxVerifier",
    "TeeType",
    "TurinTcb",
    "VerificationResult",
    "Verifier",
    "check_binding",
    "check_pinned_roots",
    "configure",
    "parse_agent_reply",
    "policy_from_json",
    "policy_review",
    "report_data_for",
    "spki_of_certificate",
    "vcek_cache_key",
    "verifier_for",
    "verify_evidence",
    "verify_genuine",
]
