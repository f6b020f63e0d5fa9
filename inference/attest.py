"""Attestation of backends: policies, the nonce challenge, and what it changes in routing.

The challenge (see `inference/attestation/README.md` for the whole story):

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
import secrets
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from pydantic import ValidationError

from cubeai.exceptions import NotFound
from domains.services import Invalid
from inference import attestation as att
from inference.attestation import (
    AgentReplyError,
    Failure,
    FailureCode,
    TeeType,
    VerificationResult,
)
from inference.models import AttestationPolicy, AttestationRecord, Backend

log = logging.getLogger(__name__)

# A reply is a few KB (SNP) to a few hundred KB (TDX collateral); refuse to buffer more.
MAX_REPLY_BYTES = 4 * 1024 * 1024
NONCE_BYTES = 32
BINDING = "report_data = SHA-512(nonce || tls_public_key_der)"

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


# Policies --------------------------------------------------------------------------------


def policy_active(*, backend: Backend) -> AttestationPolicy | None:
    return AttestationPolicy.objects.filter(backend=backend, active=True).first()


def _field_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        path = ".".join(str(part) for part in ("document", *error["loc"]))
        errors.setdefault(path, []).append(error["msg"])
    return errors


def attestation_policy_set(
    *, backend: Backend, document: Any, actor: Any = None
) -> AttestationPolicy:
    """Make `document` the backend's active policy, as a new version.

    The document is validated for the backend's TEE type (field errors raise `Invalid`) and
    stored normalised, defaults included, so the export says exactly what is enforced. The
    same document as the active one creates nothing. A new version voids the backend's
    current verification (it was made under another policy): the backend is `unverified`,
    hence out of routing, until it is attested again under the new version.
    """
    if not isinstance(document, dict):
        raise Invalid({"document": ["The policy must be a JSON object."]})
    try:
        policy = att.policy_from_json(tee_of(backend), document)
    except ValidationError as exc:
        raise Invalid(_field_errors(exc)) from None
    normalised = policy.model_dump(mode="json")
    user = getattr(actor, "user", actor)
    with transaction.atomic():
        Backend.objects.select_for_update().filter(pk=backend.pk).first()
        current = policy_active(backend=backend)
        if current is not None and current.document == normalised:
            return current
        latest = AttestationPolicy.objects.filter(backend=backend).aggregate(v=Max("version"))
        AttestationPolicy.objects.filter(backend=backend, active=True).update(active=False)
        row = AttestationPolicy.objects.create(
            backend=backend,
            version=(latest["v"] or 0) + 1,
            tee_type=backend.tee_type,
            document=normalised,
            active=True,
            created_by=user if getattr(user, "pk", None) else None,
        )
        if backend.tee_type != Backend.TeeType.NONE:
            Backend.objects.filter(pk=backend.pk).update(
                attestation_status=Backend.Attestation.UNVERIFIED,
                attestation_expires_at=None,
                attestation_error=f"policy changed to version {row.version}; not attested yet",
                updated_at=timezone.now(),
            )
    log.info("attestation policy of %s is now version %s", backend.name, row.version)
    return row


def policy_export(*, backend: Backend) -> dict[str, Any]:
    """The backend's active policy as JSON, with the version and TEE type it applies to."""
    row = policy_active(backend=backend)
    return {
        "backend": backend.name,
        "tee_type": backend.tee_type,
        "version": row.version if row else None,
        "created_at": row.created_at.isoformat() if row else None,
        "policy": effective_policy(backend, row),
    }


def effective_policy(backend: Backend, row: AttestationPolicy | None) -> dict[str, Any] | None:
    """The policy the verifier gets. A `none` backend needs the operator's explicit
    `allow_not_confidential` *and*, if it has a policy, `allow_insecure` in it."""
    if backend.tee_type == Backend.TeeType.NONE:
        allowed = bool(row.document.get("allow_insecure")) if row is not None else True
        return {"allow_insecure": backend.allow_not_confidential and allowed}
    return dict(row.document) if row is not None else None


# The challenge ---------------------------------------------------------------------------


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


# Services --------------------------------------------------------------------------------


def backend_attest(*, backend: Backend, trigger: str) -> AttestationRecord:
    """Challenge the backend with a fresh nonce, record the outcome, and update its status
    and pinned key, which the routing snapshot of every gateway process picks up."""
    now = timezone.now()
    challenge = run_challenge(
        backend=backend,
        nonce=secrets.token_bytes(NONCE_BYTES),
        policy_row=policy_active(backend=backend),
        now=now,
    )
    with transaction.atomic():
        current = Backend.objects.select_for_update().get(pk=backend.pk)
        changes: dict[str, Any] = {"updated_at": now}
        if challenge.ok:
            key_changed = current.pinned_key_sha256 != challenge.key_sha256
            if key_changed and current.pinned_key_sha256:
                trigger = AttestationRecord.Trigger.KEY_CHANGE
                log.warning("backend %s presents a new attested TLS key", backend.name)
            confidential = backend.tee_type != Backend.TeeType.NONE
            changes.update(
                attestation_status=Backend.Attestation.VERIFIED
                if confidential
                else Backend.Attestation.NOT_CONFIDENTIAL,
                attested_at=now,
                attestation_expires_at=now
                + timedelta(seconds=settings.CUBEAI_ATTESTATION_VALIDITY_SECONDS),
                attestation_error="",
                pinned_key_sha256=challenge.key_sha256,
            )
        else:
            # The pin is kept: traffic that still flows (a `none` backend) must keep going
            # to the key that was attested, not to whatever answers now.
            changes.update(
                attestation_status=Backend.Attestation.FAILED,
                attestation_expires_at=None,
                attestation_error="; ".join(challenge.result.reasons)[:500],
            )
            log.warning(
                "attestation of %s failed: %s", backend.name, "; ".join(challenge.result.reasons)
            )
        Backend.objects.filter(pk=backend.pk).update(**changes)
        record = AttestationRecord.objects.create(
            backend=current,
            at=now,
            trigger=trigger,
            tee_type=backend.tee_type,
            **challenge.record_fields(),
        )
    for name, value in changes.items():
        setattr(backend, name, value)
    return record


def backends_expire_attestations(*, now: datetime | None = None) -> int:
    """Mark verified backends whose attestation expired as failed, and record it."""
    now = now or timezone.now()
    expired = Backend.objects.filter(
        attestation_status=Backend.Attestation.VERIFIED, attestation_expires_at__lte=now
    )
    count = 0
    for backend in expired:
        with transaction.atomic():
            updated = Backend.objects.filter(
                pk=backend.pk,
                attestation_status=Backend.Attestation.VERIFIED,
                attestation_expires_at__lte=now,
            ).update(
                attestation_status=Backend.Attestation.FAILED,
                attestation_error="attestation expired",
                updated_at=now,
            )
            if updated:
                count += 1
                AttestationRecord.objects.create(
                    backend=backend,
                    at=now,
                    ok=False,
                    trigger=AttestationRecord.Trigger.PERIODIC,
                    tee_type=backend.tee_type,
                    failures=[{"code": "expired", "message": "attestation expired"}],
                    nonce="",
                )
    return count


def attestable_backends():
    """Enabled TEE backends, and `none` backends that run the agent (it has `/attestation`)."""
    from django.db.models import Q

    return Backend.objects.filter(enabled=True).filter(
        ~Q(tee_type=Backend.TeeType.NONE) | Q(kind=Backend.Kind.AGENT)
    )


async def client_challenge(*, backend: Backend, nonce: bytes) -> tuple[Challenge, str]:
    """Run the challenge with a client's nonce. It records the challenge but changes nothing
    about the backend: a client cannot move a backend in or out of routing. Returns the
    challenge and the backend's currently pinned key hash."""
    row = await sync_to_async(policy_active)(backend=backend)
    challenge = await sync_to_async(run_challenge, thread_sensitive=False)(
        backend=backend, nonce=nonce, policy_row=row, now=timezone.now()
    )
    await sync_to_async(AttestationRecord.objects.create)(
        backend=backend,
        at=timezone.now(),
        trigger=AttestationRecord.Trigger.CLIENT,
        tee_type=backend.tee_type,
        **challenge.record_fields(),
    )
    return challenge, backend.pinned_key_sha256


def reattest_later(
    *, backend: Backend, trigger: str = AttestationRecord.Trigger.POLICY_CHANGE
) -> None:
    """Queue a challenge of the backend for a worker, once the current transaction commits."""

    def send() -> None:
        from inference.tasks import attest_backend

        try:
            attest_backend.delay(backend.pk, str(trigger))
        except Exception:
            # The periodic run will get to it; a broker outage must not fail the edit.
            log.exception("could not queue the attestation of %s", backend.name)

    transaction.on_commit(send)


def backend_get(*, name: str) -> Backend:
    try:
        return Backend.objects.get(name=name)
    except Backend.DoesNotExist:
        raise NotFound(f"No backend named {name!r}.") from None


def record_download(record: AttestationRecord) -> dict[str, Any]:
    """A record as JSON for download: the agent's reply fields plus the verification."""
    return {
        "backend": record.backend.name,
        "at": record.at.isoformat(),
        "trigger": record.trigger,
        "binding": BINDING,
        "attestation": {
            "provider": record.tee_type,
            "confidential": record.tee_type != Backend.TeeType.NONE,
            "nonce": record.nonce,
            "report_data": record.report_data,
            "tls_public_key": record.tls_public_key or None,
            "evidence": record.evidence or None,
            "auxblob": record.auxblob or None,
        },
        "verification": {
            "ok": record.ok,
            "failures": record.failures,
            "claims": record.claims,
            "cert_chain": record.cert_chain,
            "policy_version": record.policy_version,
        },
        "tls_public_key_sha256": record.key_sha256,
    }
