"""Writes of attestation: policy versions, challenges that move a backend in or out of
routing, expiry, and the records every challenge leaves."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from pydantic import ValidationError

from cubeai.exceptions import DomainError
from cubeai.lib.batches import delete_in_batches
from domains.services import Invalid
from inference import attestation as att
from inference import credentials
from inference.attestation.challenge import NONCE_BYTES, Challenge, run_challenge, tee_of
from inference.attestation.selectors import policy_active
from inference.errors import RateLimited
from inference.models import AttestationPolicy, AttestationRecord, Backend, registry_changed

log = logging.getLogger(__name__)


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
            registry_changed()
    log.info("attestation policy of %s is now version %s", backend.name, row.version)
    return row


def _audit_attestation(backend: Backend, changes: dict, trigger: str) -> None:
    """A backend's attestation changed state (or its attested key): say so in the audit
    trail of every domain it serves. Periodic challenges that change nothing are recorded
    as `AttestationRecord`s only."""
    from domains.services import audit_record
    from inference.access import domains_served_by

    failed = changes["attestation_status"] == Backend.Attestation.FAILED
    for domain in domains_served_by(backend):
        audit_record(
            None,
            domain,
            "backend.attestation_failed" if failed else "backend.attested",
            backend.name,
            previous=backend.attestation_status,
            status=changes["attestation_status"],
            trigger=trigger,
            tee_type=backend.tee_type,
            **({"error": changes["attestation_error"][:200]} if failed else {}),
        )


def backend_attest(*, backend: Backend, trigger: str, deliver: bool = True) -> AttestationRecord:
    """Challenge the backend with a fresh nonce, record the outcome, and update its status
    and pinned key, which the routing snapshot of every gateway process picks up.

    A provisioned agent that passed is then sent its credential, bound to this challenge
    (`deliver=False` leaves that to the caller, which sends a new one)."""
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
        registry_changed()
        if (
            current.attestation_status != changes["attestation_status"]
            or trigger == AttestationRecord.Trigger.KEY_CHANGE
        ):
            _audit_attestation(current, changes, trigger)
        record = AttestationRecord.objects.create(
            backend=current,
            at=now,
            trigger=trigger,
            tee_type=backend.tee_type,
            **challenge.record_fields(),
        )
    for name, value in changes.items():
        setattr(backend, name, value)
    if deliver and challenge.ok and current.provision_credential:
        try:
            credentials.backend_credential_deliver_stored(backend=current, record=record)
        except DomainError as exc:
            # Routing is left as attested; the next period's challenge delivers it again.
            log.warning("the credential of %s was not delivered: %s", backend.name, exc.message)
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


# Clients' challenges in flight in this process: backend id -> (nonce, its outcome).
_client_in_flight: dict[int, tuple[bytes, asyncio.Future]] = {}
_client_waiting: Counter[int] = Counter()


async def client_challenge(*, backend: Backend, nonce: bytes) -> tuple[Challenge, str]:
    """Run the challenge with a client's nonce. It records the challenge but changes nothing
    about the backend: a client cannot move a backend in or out of routing. Returns the
    challenge and the backend's currently pinned key hash.

    One challenge of a backend is in flight at a time in a process: a concurrent request
    with the same nonce gets its result, one with another nonce waits for it to end (its
    evidence must bind its own nonce), and past `CUBEAI_ATTESTATION_CLIENT_QUEUE` waiting
    it is a 429. What is stored is capped (`_record_client`)."""
    while (current := _client_in_flight.get(backend.pk)) is not None:
        current_nonce, outcome = current
        if current_nonce != nonce and (
            _client_waiting[backend.pk] >= settings.CUBEAI_ATTESTATION_CLIENT_QUEUE
        ):
            raise RateLimited(
                "Too many attestation challenges of this backend at once; retry shortly.",
                headers={"Retry-After": "1"},
            )
        _client_waiting[backend.pk] += 1
        try:
            await asyncio.wait([outcome])
        finally:
            _client_waiting[backend.pk] -= 1
        if current_nonce == nonce and outcome.result() is not None:
            return outcome.result(), backend.pinned_key_sha256
    outcome = asyncio.get_running_loop().create_future()
    _client_in_flight[backend.pk] = (nonce, outcome)
    challenge = None
    try:
        row = await sync_to_async(policy_active)(backend=backend)
        challenge = await sync_to_async(run_challenge, thread_sensitive=False)(
            backend=backend, nonce=nonce, policy_row=row, now=timezone.now()
        )
        await sync_to_async(_record_client)(backend=backend, challenge=challenge)
    finally:
        del _client_in_flight[backend.pk]
        # None when it failed: a waiter with the same nonce then runs its own.
        outcome.set_result(challenge)
    return challenge, backend.pinned_key_sha256


def _record_client(*, backend: Backend, challenge: Challenge) -> None:
    """Store a client's challenge, capped: at most one record of a backend per
    `CUBEAI_ATTESTATION_CLIENT_RECORD_SECONDS` (the client has the evidence in its answer),
    and its evidence only when within `CUBEAI_ATTESTATION_MAX_STORED_BYTES`."""
    since = timezone.now() - timedelta(seconds=settings.CUBEAI_ATTESTATION_CLIENT_RECORD_SECONDS)
    recent = AttestationRecord.objects.filter(
        backend=backend, trigger=AttestationRecord.Trigger.CLIENT, at__gte=since
    )
    if recent.exists():
        return
    fields = challenge.record_fields()
    bulky = ("evidence", "auxblob", "tls_public_key")
    size = sum(len(fields[name]) for name in bulky) + len(json.dumps(fields["cert_chain"]))
    if size > settings.CUBEAI_ATTESTATION_MAX_STORED_BYTES:
        fields.update({name: "" for name in bulky}, cert_chain=[])
    AttestationRecord.objects.create(
        backend=backend,
        at=timezone.now(),
        trigger=AttestationRecord.Trigger.CLIENT,
        tee_type=backend.tee_type,
        **fields,
    )


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


def attestation_records_purge(*, older_than_days: int, batch_size: int) -> int:
    """Delete challenge records older than the retention period, in batches, except each
    backend's latest record and latest platform challenge (what members are shown)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    keep: set[int] = set()
    for backend_id in Backend.objects.values_list("pk", flat=True):
        records = AttestationRecord.objects.filter(backend_id=backend_id).order_by("-at", "-pk")
        keep.update(records.values_list("pk", flat=True)[:1])
        keep.update(
            records.exclude(trigger=AttestationRecord.Trigger.CLIENT).values_list("pk", flat=True)[
                :1
            ]
        )
    old = AttestationRecord.objects.filter(at__lt=cutoff).exclude(pk__in=keep)
    return delete_in_batches(old, batch_size=batch_size)
