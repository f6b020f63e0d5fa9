"""Attestation verification for TEE backends: AMD SEV-SNP, Intel TDX and `none`.

Pure Python (cryptography, dcap-qvl, pydantic); no Django, no network. The platform calls

    result = verify_evidence(backend.tee_type, evidence, policy, now=timezone.now())

and gets a `VerificationResult` (`ok`, `failures`, `claims`, `cert_chain`) that it can
store as JSON. Evidence usually comes from the agent's `/attestation` reply through
`parse_agent_reply`; the nonce and TLS key binding is described in `binding`.
"""

from .agent import AgentReply, AgentReplyError, parse_agent_reply
from .base import Verifier
from .binding import check_binding, report_data_for, spki_of_certificate
from .dispatch import configure, verifier_for, verify_evidence
from .insecure import NoneVerifier
from .policy import NonePolicy, Policy, SnpPolicy, SnpTcb, TdxPolicy, policy_from_json
from .results import Evidence, Failure, FailureCode, TeeType, VerificationResult
from .roots import PinnedRootError, check_pinned_roots
from .snp import SnpReport, SnpVerifier, vcek_cache_key
from .tdx import TdxQuote, TdxVerifier

__all__ = [
    "AgentReply",
    "AgentReplyError",
    "Evidence",
    "Failure",
    "FailureCode",
    "NonePolicy",
    "NoneVerifier",
    "PinnedRootError",
    "Policy",
    "SnpPolicy",
    "SnpReport",
    "SnpTcb",
    "SnpVerifier",
    "TdxPolicy",
    "TdxQuote",
    "TdxVerifier",
    "TeeType",
    "VerificationResult",
    "Verifier",
    "check_binding",
    "check_pinned_roots",
    "configure",
    "parse_agent_reply",
    "policy_from_json",
    "report_data_for",
    "spki_of_certificate",
    "vcek_cache_key",
    "verifier_for",
    "verify_evidence",
]
