"""Periodic and on-demand attestation of backends, health checks and retention, run by
Celery (beat for the periodic ones)."""

import logging

from celery import shared_task
from django.conf import settings

from inference import metering
from inference.attestation import selectors as attestation_selectors
from inference.attestation import services as attestation_services
from inference.models import AttestationRecord, Backend

log = logging.getLogger(__name__)


@shared_task
def attest_backends() -> dict[str, int]:
    """Expire stale verifications, then challenge every attestable backend, each on its own."""
    expired = attestation_services.backends_expire_attestations()
    passed = failed = 0
    for backend in attestation_selectors.attestable_backends():
        try:
            record = attestation_services.backend_attest(
                backend=backend, trigger=AttestationRecord.Trigger.PERIODIC
            )
        except Exception:
            # One backend's trouble (say, its row vanished mid-run) must not spare the others.
            log.exception("attesting backend %s failed", backend.name)
            failed += 1
            continue
        passed, failed = (passed + 1, failed) if record.ok else (passed, failed + 1)
    return {"passed": passed, "failed": failed, "expired": expired}


@shared_task
def attest_backend(backend_id: int, trigger: str = AttestationRecord.Trigger.ON_DEMAND) -> bool:
    """Challenge one backend now (admin action, policy change, pin mismatch)."""
    backend = Backend.objects.filter(pk=backend_id, enabled=True).first()
    if backend is None:
        return False
    return attestation_services.backend_attest(backend=backend, trigger=trigger).ok


@shared_task
def backends_check_health() -> dict[str, bool]:
    """Probe every enabled backend and record whether it answers (see inference.health)."""
    from inference import health

    return health.backends_check_health()


@shared_task
def usage_events_purge() -> int:
    """Delete usage events older than `CUBEAI_RETENTION_USAGE_DAYS`."""
    return metering.usage_events_purge(
        older_than_days=settings.CUBEAI_RETENTION_USAGE_DAYS,
        batch_size=settings.CUBEAI_RETENTION_BATCH_SIZE,
    )


@shared_task
def attestation_records_purge() -> int:
    """Delete attestation records older than `CUBEAI_RETENTION_ATTESTATION_DAYS`."""
    return attestation_services.attestation_records_purge(
        older_than_days=settings.CUBEAI_RETENTION_ATTESTATION_DAYS,
        batch_size=settings.CUBEAI_RETENTION_BATCH_SIZE,
    )


# Transcription jobs live in their own package; importing registers their tasks.
from inference.jobs import tasks as _jobs_tasks  # noqa: E402,F401
