"""Reads of attestation: backends' policies, what may be attested, records for download."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from pydantic import ValidationError

from cubeai.exceptions import NotFound
from inference.attestation import TeeType, policy_from_json, policy_review
from inference.models import AttestationPolicy, AttestationRecord, Backend

BINDING = "report_data = SHA-512(nonce || tls_public_key_der)"


def policy_active(*, backend: Backend) -> AttestationPolicy | None:
    return AttestationPolicy.objects.filter(backend=backend, active=True).first()


def policy_export(*, backend: Backend) -> dict[str, Any]:
    """The backend's active policy as JSON, with the version and TEE type it applies to and
    which of its fields are pinned or open."""
    row = policy_active(backend=backend)
    policy = effective_policy(backend, row)
    return {
        "backend": backend.name,
        "tee_type": backend.tee_type,
        "version": row.version if row else None,
        "created_at": row.created_at.isoformat() if row else None,
        "policy": policy,
        **policy_fields(tee_type=backend.tee_type, document=policy),
    }


def policy_fields(*, tee_type: str, document: dict[str, Any] | None) -> dict[str, Any]:
    """Which fields of a policy document are pinned and which are open (`policy_fields`),
    and a warning for each open one (`warnings`), for the page and both APIs."""
    if document is None:
        return {"policy_fields": [], "warnings": ["no policy: this backend cannot be attested"]}
    try:
        policy = policy_from_json(TeeType.from_provider(tee_type), document)
    except ValidationError:
        # Stored versions are validated on the way in and migrated with the schema, so this
        # is a hand-edited row; say so rather than fail the page.
        return {
            "policy_fields": [],
            "warnings": ["the stored policy is not valid; save a new version"],
        }
    fields = [field.to_dict() for field in policy_review(policy)]
    warnings = [f"{field['field']}: {field['warning']}" for field in fields if field["warning"]]
    return {"policy_fields": fields, "warnings": warnings}


def effective_policy(backend: Backend, row: AttestationPolicy | None) -> dict[str, Any] | None:
    """The policy the verifier gets. A `none` backend needs the operator's explicit
    `allow_not_confidential` *and*, if it has a policy, `allow_insecure` in it."""
    if backend.tee_type == Backend.TeeType.NONE:
        allowed = bool(row.document.get("allow_insecure")) if row is not None else True
        return {"allow_insecure": backend.allow_not_confidential and allowed}
    return dict(row.document) if row is not None else None


def backend_get(*, name: str) -> Backend:
    try:
        return Backend.objects.get(name=name)
    except Backend.DoesNotExist:
        raise NotFound(f"No backend named {name!r}.") from None


def attestable_backends():
    """Enabled TEE backends, and `none` backends that run the agent (it has `/attestation`)."""
    return Backend.objects.filter(enabled=True).filter(
        ~Q(tee_type=Backend.TeeType.NONE) | Q(kind=Backend.Kind.AGENT)
    )


def last_platform_record(backend: Backend) -> AttestationRecord | None:
    """The platform's own latest challenge; a client's challenge never changes what is shown."""
    return (
        AttestationRecord.objects.filter(backend=backend)
        .exclude(trigger=AttestationRecord.Trigger.CLIENT)
        .first()
    )


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
