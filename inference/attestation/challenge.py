"""The nonce challenge of a backend's agent, and the verification of its reply.

This is the platform's side of attestation (Django settings, the network); the rest of this
package is the pure verifier library it calls. The challenge (see `inference/attestation/README.md` for the whole story):

1. a fresh 32-byte nonce (`secrets.token_bytes(32)`; a client's own for a client challenge)
   is POSTed as `{"nonce": "<64 hex>"}` to `<base_url without /v1>/attestation`;
2. the agent's reply must echo the nonce, and its evidence must verify under the backend's
   active policy (`inference.attestation.verify_evidence`, with the backend's configured
   TEE type, never the one the agent claims);
3. the verified REPORT_DATA must equal SHA-512(nonce || tls_public_key_der), the DER
   SubjectPublicKeyInfo the agent sent; over https that key must also be the key of the
   certificate the agent presented on this very connection, and a TEE backend must be
   reached over https at all, since otherwise there is no key to pin;
4. on success the backend is `verified` (`not-confidential` for a `none` backend) until
   now + CUBEAI_ATTESTATION_VALIDITY_SECONDS, and SHA-256 of the key is pinned for traffic
   (`inference.upstream`); on failure it is `failed`, which takes it out of routing.

Every challenge, passed or failed, leaves an `AttestationRecord`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from django.conf import settings

from inference import attestation as att
from inference.attestation import (
    AgentReplyError,
    Failure,
    FailureCode,
    TeeType,
    VerificationResult,
)
from inference.attestation.selectors import effective_policy
from inference.models import AttestationPolicy, Backend

log = logging.getLogger(__name__)

# A reply is a few KB (SNP) to a few hundred KB (TDX collateral); refuse to buffer more.
MAX_REPLY_BYTES = 4 * 1024 * 1024
NONCE_BYTES = 32

_configured = False


def _configure_verifiers() -> None:
    """Give the verifiers the operator's VCEK cache, AMD CRLs and TDX collateral, once per
    process."""
    global _configured
    if _configured:
        return
    verifiers: dict[TeeType, att.Verifier] = {}
    if settings.CUBEAI_ATTESTATION_VCEK_CACHE_DIR or settings.CUBEAI_ATTESTATION_AMD_CRL_DIR:
        verifiers[TeeType.SEV_SNP] = att.SnpVerifier(
            vcek_cache=settings.CUBEAI_ATTESTATION_VCEK_CACHE_DIR or None,
            crls=settings.CUBEAI_ATTESTATION_AMD_CRL_DIR or None,
        )
    if settings.CUBEAI_ATTESTATION_COLLATERAL_CACHE_DIR:
        verifiers[TeeType.TDX] = att.TdxVerifier(
            collateral_cache=settings.CUBEAI_ATTESTATION_COLLATERAL_CACHE_DIR
        )
    att.configure(verifiers)
    _configured = True


def tee_of(backend: Backend) -> TeeType:
    """The verifier library's TEE type for the backend's configured one."""
    return TeeType.from_provider(backend.tee_type)


def attestation_url(base_url: str) -> str:
    """`https://agent:8100/v1` -> `https://agent:8100/attestation`."""
    root = base_url.rstrip("/")
    return f"{root.removesuffix('/v1')}/attestation"


@dataclass
class Challenge:
    """One challenge's outcome: the verification result and what the agent sent."""

    nonce: bytes
    result: VerificationResult
    reply: dict[str, Any] | None = None
    tls_public_key: bytes | None = None
    policy_version: int | None = None

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def key_sha256(self) -> str:
        return hashlib.sha256(self.tls_public_key).hexdigest() if self.tls_public_key else ""

    def record_fields(self) -> dict[str, Any]:
        reply = self.reply or {}
        return {
            "ok": self.ok,
            "failures": [failure.to_dict() for failure in self.result.failures],
            "claims": self.result.claims,
            "nonce": self.nonce.hex(),
            "report_data": str(reply.get("report_data") or "")[:128],
            "tls_public_key": str(reply.get("tls_public_key") or ""),
            "evidence": str(reply.get("evidence") or ""),
            "auxblob": str(reply.get("auxblob") or ""),
            "cert_chain": self.result.cert_chain,
            "key_sha256": self.key_sha256,
            "policy_version": self.policy_version,
        }


class _Unreachable(Exception):
    pass


def _unverified_tls() -> ssl.SSLContext:
    # Agents use self-signed certificates: trust comes from the attested key, which is
    # compared with the certificate's key below, never from a CA.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _post_nonce(url: str, nonce: bytes, timeout: float) -> tuple[int, bytes, bytes | None]:
    """POST the nonce; returns the status, the body and the peer certificate's SPKI (https)."""
    try:
        with (
            httpx.Client(verify=_unverified_tls(), timeout=timeout, trust_env=False) as client,
            client.stream("POST", url, json={"nonce": nonce.hex()}) as response,
        ):
            peer_key = None
            stream = response.extensions.get("network_stream")
            ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
            if ssl_object is not None:
                peer_key = att.spki_of_certificate(ssl_object.getpeercert(True))
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    raise _Unreachable(f"the reply is larger than {MAX_REPLY_BYTES} bytes")
            return response.status_code, bytes(body), peer_key
    except httpx.TimeoutException:
        raise _Unreachable(f"no reply within {timeout:g} s") from None
    except (httpx.HTTPError, ssl.SSLError, OSError, ValueError) as exc:
        raise _Unreachable(f"{type(exc).__name__}: {exc}"[:300]) from None


def _failed(tee: TeeType, code: FailureCode, message: str, nonce: bytes, **kw) -> Challenge:
    return Challenge(nonce=nonce, result=VerificationResult.failed(tee, code, message), **kw)


def run_challenge(
    *, backend: Backend, nonce: bytes, policy_row: AttestationPolicy | None, now: datetime
) -> Challenge:
    """Challenge the backend's agent with `nonce` and verify the reply. Never raises for
    anything the agent sends; writes nothing."""
    _configure_verifiers()
    tee = tee_of(backend)
    version = policy_row.version if policy_row is not None else None
    policy = effective_policy(backend, policy_row)
    url = attestation_url(backend.base_url)
    try:
        status, body, peer_key = _post_nonce(
            url, nonce, settings.CUBEAI_ATTESTATION_TIMEOUT_SECONDS
        )
    except Exception as exc:
        if not isinstance(exc, _Unreachable):
            # Whatever went wrong talking to the agent, it is a failure, never a crash.
            log.exception("attestation request to %s failed", url)
        return _failed(
            tee,
            FailureCode.AGENT_UNREACHABLE,
            f"{url}: {exc}",
            nonce,
            policy_version=version,
        )
    if status != 200:
        return _failed(
            tee,
            FailureCode.AGENT_ERROR,
            f"{url} answered HTTP {status}: {body[:200].decode(errors='replace')}",
            nonce,
            policy_version=version,
        )
    try:
        reply = att.parse_agent_reply(body)
        raw = json.loads(body)
    except (AgentReplyError, ValueError, RecursionError) as exc:
        return _failed(
            tee, FailureCode.MALFORMED_REPLY, str(exc)[:500], nonce, policy_version=version
        )
    failures: list[Failure] = []
    if not hmac.compare_digest(reply.nonce, nonce):
        failures.append(
            Failure(FailureCode.NONCE_MISMATCH, "the reply answers another nonce (a replay?)")
        )
    if policy is None:
        result = VerificationResult(tee_type=tee, ok=False)
        failures.append(
            Failure(FailureCode.NO_POLICY, f"backend {backend.name} has no attestation policy")
        )
    else:
        result = att.verify_evidence(tee, reply.evidence, policy, now=now)
    key = reply.tls_public_key
    if peer_key is not None and (key is None or not hmac.compare_digest(key, peer_key)):
        failures.append(
            Failure(
                FailureCode.TLS_KEY_MISMATCH,
                "the TLS certificate the agent presented does not carry the attested key",
            )
        )
    if tee != TeeType.NONE and peer_key is None:
        failures.append(
            Failure(
                FailureCode.TLS_KEY_MISMATCH,
                "a confidential backend must be reached over https, so its attested key "
                "can be pinned",
            )
        )
    # The bare claims: the binding is judged even when verification failed, to say why.
    if not att.check_binding(result.claims, nonce, key or b""):
        failures.append(
            Failure(
                FailureCode.BINDING_MISMATCH,
                "REPORT_DATA is not SHA-512(nonce || tls_public_key_der) for this nonce and key",
            )
        )
    combined = VerificationResult.from_checks(
        tee, [*result.failures, *failures], result.claims, result.cert_chain
    )
    return Challenge(
        nonce=nonce, result=combined, reply=raw, tls_public_key=key, policy_version=version
    )
