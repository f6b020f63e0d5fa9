"""Transcription jobs: create, follow, cancel, run-state transitions, sweeping and purging.

Every change of a job's state is one conditional UPDATE on its row, so that two holders of
the same job (a task delivered twice, a job re-sent by the sweeper while a slow worker still
runs it) cannot both store a result: a worker claims a job by bumping `attempts`, and each
later write of that run names the attempt it claimed (a fencing token). Whoever moves a job
to a final state deletes its audio.

Synchronous (ORM); async callers wrap them in `sync_to_async`.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Iterable

import filetype
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from cubeai.exceptions import AuthenticationFailed, Conflict, NotFound
from cubeai.lib.batches import delete_in_batches
from domains.selectors import membership_for, membership_rights
from inference.context import Caller
from inference.errors import InferenceError
from inference.jobs import storage
from inference.jobs.models import TranscriptionJob as Job

log = logging.getLogger(__name__)

JOB_NOT_FOUND = "No transcription job with that id."


def _seconds(value: datetime.datetime | None) -> int | None:
    return int(value.timestamp()) if value else None


def job_object(job: Job) -> dict:
    """The job as the API and the page's WebSocket show it (never the audio or prompt)."""
    backend = None
    if job.backend:
        backend = {
            "name": job.backend,
            "tee_type": job.tee_type,
            "attestation": job.attestation,
            "confidential": job.tee_type not in ("", "none"),
        }
    return {
        "id": str(job.id),
        "object": "audio.transcription.job",
        "created_at": _seconds(job.created_at),
        "started_at": _seconds(job.started_at),
        "finished_at": _seconds(job.finished_at),
        "expires_at": _seconds(job.expires_at),
        "model": job.model,
        "task": job.task,
        "language": job.language or None,
        "response_format": job.response_format,
        "filename": job.filename,
        "bytes": job.size,
        "status": job.status,
        "progress": round(job.progress, 4),
        "duration": job.duration,
        "attempts": job.attempts,
        "error": job.error,
        "backend": backend,
    }


def group_name(domain_id, owner_id) -> str:
    """The Channels group of one member's jobs in one domain."""
    return f"transcriptions.{uuid.UUID(str(domain_id)).hex}.{owner_id}"


# Creating ---------------------------------------------------------------------------------

AUDIO_FORMATS_TEXT = "flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, wav, webm"


def audio_content_type(upload) -> str:
    """The audio (or video) type an upload's first bytes announce; refuses an empty file,
    one over `CUBEAI_MAX_AUDIO_BYTES` and one that is not audio, each with a clear error."""
    if upload.size == 0:
        raise InferenceError("The uploaded file is empty.", param="file")
    if upload.size > settings.CUBEAI_MAX_AUDIO_BYTES:
        raise InferenceError(
            f"The audio file is larger than the limit of {settings.CUBEAI_MAX_AUDIO_BYTES} bytes.",
            status=413,
            param="file",
            code="request_too_large",
        )
    head = upload.read(8192)
    upload.seek(0)
    kind = filetype.guess(head)
    if kind is None or kind.mime.split("/")[0] not in ("audio", "video"):
        raise InferenceError(
            f"The file is not audio in a format the models decode ({AUDIO_FORMATS_TEXT}).",
            param="file",
            code="invalid_audio",
        )
    return kind.mime


def job_create(
    *,
    domain_id: str,
    owner_id: int,
    token_id: int | None,
    model: str,
    task: str,
    language: str,
    response_format: str,
    options: dict,
    filename: str,
    content_type: str,
    size: int,
    chunks: Iterable[bytes],
    request_id: str,
) -> Job:
    """Store the audio, then the queued job, and send it to a worker once committed; refuses
    (429) an owner who already has `CUBEAI_TRANSCRIPTION_MAX_ACTIVE_JOBS` queued or running
    in the domain, before anything is stored."""
    _check_active_jobs(domain_id=domain_id, owner_id=owner_id)
    job_id = uuid.uuid4()
    storage.save(job_id, chunks)
    now = timezone.now()
    try:
        with transaction.atomic():
            job = Job.objects.create(
                id=job_id,
                domain_id=domain_id,
                owner_id=owner_id,
                token_id=token_id,
                model=model,
                task=task,
                language=language,
                response_format=response_format,
                options=options,
                filename=filename[:255],
                content_type=content_type[:128],
                size=size,
                request_id=request_id,
                lease_expires_at=now + _queued_lease(),
            )
            transaction.on_commit(lambda: send(job_id))
    except BaseException:
        storage.delete(job_id)
        raise
    return job


def _check_active_jobs(*, domain_id: str, owner_id: int) -> None:
    # Counted, not locked: two uploads at the same instant may both pass, which a cap on
    # queued work (not a security boundary) can allow.
    cap = settings.CUBEAI_TRANSCRIPTION_MAX_ACTIVE_JOBS
    active = Job.objects.filter(
        domain_id=domain_id, owner_id=owner_id, status__in=(Job.Status.QUEUED, Job.Status.RUNNING)
    ).count()
    if active >= cap:
        raise InferenceError(
            f"You already have {active} transcription jobs queued or running in this domain, "
            f"the most allowed (CUBEAI_TRANSCRIPTION_MAX_ACTIVE_JOBS = {cap}). Submit more "
            "once one has ended, or cancel one.",
            status=429,
            code="too_many_active_jobs",
            extra={"limit": "active_jobs"},
        )


def send(job_id: uuid.UUID | str, *, countdown: float | None = None) -> None:
    from inference.jobs.tasks import transcription_job_run

    try:
        transcription_job_run.apply_async((str(job_id),), countdown=countdown)
    except Exception:
        # The sweeper sends it again once its lease lapses.
        log.exception("could not queue transcription job %s", job_id)


def _queued_lease(extra: float = 0) -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.CUBEAI_TRANSCRIPTION_QUEUED_LEASE_SECONDS + extra)


def _running_lease() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.CUBEAI_TRANSCRIPTION_LEASE_SECONDS)


# Reading ----------------------------------------------------------------------------------


def job_get(*, domain_id: str, owner_id: int, job_id: str) -> Job:
    """The caller's own job in this domain; anything else (another domain's or member's
    job, a malformed id) is the same 404."""
    try:
        key = uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(JOB_NOT_FOUND) from None
    job = Job.objects.filter(pk=key, domain_id=domain_id, owner_id=owner_id).first()
    if job is None:
        raise NotFound(JOB_NOT_FOUND)
    return job


def job_list(
    *, domain_id: str, owner_id: int, limit: int = 20, after: str | None = None
) -> tuple[list[Job], bool]:
    """The caller's jobs in this domain, newest first, `limit` at a time after the job
    `after` (OpenAI's cursor); returns the page and whether more follow."""
    jobs = Job.objects.filter(domain_id=domain_id, owner_id=owner_id)
    if after:
        cursor = job_get(domain_id=domain_id, owner_id=owner_id, job_id=after)
        jobs = jobs.filter(
            Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id)
        )
    page = list(jobs.order_by("-created_at", "-id")[: limit + 1])
    return page[:limit], len(page) > limit


# Cancelling -------------------------------------------------------------------------------


def job_cancel(*, domain_id: str, owner_id: int, job_id: str) -> Job:
    """Cancel a queued or running job (a running worker stops at its next segment or
    heartbeat, closing the backend's stream); 409 once it has finished."""
    job = job_get(domain_id=domain_id, owner_id=owner_id, job_id=job_id)
    now = timezone.now()
    done = Job.objects.filter(pk=job.pk, status__in=Job.ACTIVE).update(
        status=Job.Status.CANCELLED,
        finished_at=now,
        expires_at=now + _retention(),
        lease_expires_at=None,
        options={},
    )
    job.refresh_from_db()
    if not done:
        raise Conflict(
            f"The job has already {job.status}; only a queued or running job can be cancelled."
        )
    storage.delete(job.pk)
    return job


# Running (the worker) ---------------------------------------------------------------------


def job_claim(job_id: str) -> Job | None:
    """Take a queued job, or a running one whose holder's lease lapsed; None if it is not
    there to take (finished, cancelled, or held by a live run)."""
    now = timezone.now()
    claimed = (
        Job.objects.filter(pk=job_id)
        .filter(
            Q(status=Job.Status.QUEUED) | Q(status=Job.Status.RUNNING, lease_expires_at__lt=now)
        )
        .update(
            status=Job.Status.RUNNING,
            attempts=F("attempts") + 1,
            lease_expires_at=now + _running_lease(),
            started_at=Coalesce("started_at", Value(now)),
        )
    )
    return Job.objects.get(pk=job_id) if claimed else None


def _mine(job_id, attempt: int):
    return Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, attempts=attempt)


def job_progress(job_id, attempt: int, *, progress: float, duration: float | None) -> Job | None:
    """Record progress and renew the lease; None if the job is no longer this run's."""
    fields = {"progress": progress, "lease_expires_at": timezone.now() + _running_lease()}
    if duration:
        fields["duration"] = duration
    if not _mine(job_id, attempt).update(**fields):
        return None
    return Job.objects.get(pk=job_id)


def job_heartbeat(job_id, attempt: int) -> bool:
    return bool(_mine(job_id, attempt).update(lease_expires_at=timezone.now() + _running_lease()))


def _retention() -> datetime.timedelta:
    return datetime.timedelta(days=settings.CUBEAI_TRANSCRIPTION_RESULT_DAYS)


def _finish(job_id, attempt: int, **fields) -> Job | None:
    now = timezone.now()
    finished = _mine(job_id, attempt).update(
        finished_at=now,
        expires_at=now + _retention(),
        lease_expires_at=None,
        options={},
        **fields,
    )
    if not finished:
        return None
    storage.delete(job_id)
    return Job.objects.get(pk=job_id)


def job_succeed(job_id, attempt: int, *, result: dict, target) -> Job | None:
    """Store the transcript, once: a second run of the same job finds it no longer its own."""
    return _finish(
        job_id,
        attempt,
        status=Job.Status.SUCCEEDED,
        progress=1.0,
        result=result,
        duration=result.get("duration"),
        error=None,
        **_target_fields(target),
    )


def job_fail(job_id, attempt: int, *, code: str, message: str, target=None) -> Job | None:
    return _finish(
        job_id,
        attempt,
        status=Job.Status.FAILED,
        error={"code": code, "message": message},
        **_target_fields(target),
    )


def job_retry_later(job_id, attempt: int, *, countdown: float, code: str, message: str) -> bool:
    """Put the job back in the queue after a backend failure; the sweeper re-sends it if
    the delayed message is lost."""
    return bool(
        _mine(job_id, attempt).update(
            status=Job.Status.QUEUED,
            lease_expires_at=timezone.now() + _queued_lease(countdown),
            error={"code": code, "message": message, "retrying": True},
        )
    )


def _target_fields(target) -> dict:
    if target is None:
        return {}
    return {"backend": target.name, "tee_type": target.tee_type, "attestation": target.attestation}


def job_caller(job: Job) -> Caller:
    """Who runs the job, with the rights in force now: the owner's role, narrowed to the
    token's scopes for a job created with a token (a revoked or expired token, or a lost
    membership, ends the job)."""
    from tokens.models import Token
    from tokens.services import Principal

    principal = None
    key_id = ""
    if job.token_id is not None:
        token = Token.objects.active().filter(pk=job.token_id).prefetch_related("domains").first()
        if token is None:
            raise AuthenticationFailed(
                "The token that created this job was revoked or has expired."
            )
        key_id = token.key_id
        principal = Principal(
            token_id=token.pk,
            owner_id=token.owner_id,
            key_id=token.key_id,
            scopes=frozenset(token.scopes),
            all_domains=token.all_domains,
            domain_ids=frozenset(str(d.pk) for d in token.domains.all()),
            expires_at=token.expires_at,
        )
    membership = membership_for(user_id=job.owner_id, domain_id=job.domain_id, principal=principal)
    if membership is None:
        raise NotFound("Domain not found.")
    rights = membership_rights(membership, principal=principal, write=True)
    return Caller(
        token_id=job.token_id,
        user_id=job.owner_id,
        key_id=key_id,
        domain_id=str(job.domain_id),
        permissions=rights,
    )


# Housekeeping (Celery beat) ---------------------------------------------------------------


def jobs_sweep() -> int:
    """Send again every job whose lease lapsed: a running job whose worker died (on the
    embedded broker a killed worker's task is lost), a queued one whose message was lost.
    Also deletes audio files that no active job owns. Returns how many jobs were re-sent."""
    now = timezone.now()
    resent = 0
    stale = Job.objects.filter(status__in=Job.ACTIVE, lease_expires_at__lt=now)
    for job_id, status in stale.values_list("pk", "status"):
        # Conditional, so two sweepers (or a late heartbeat) do not both re-send it.
        moved = Job.objects.filter(pk=job_id, status=status, lease_expires_at__lt=now).update(
            status=Job.Status.QUEUED, lease_expires_at=now + _queued_lease()
        )
        if moved:
            log.warning("re-sending transcription job %s (lease lapsed while %s)", job_id, status)
            send(job_id)
            resent += 1
    files = storage.stored_ids()
    active = set(
        Job.objects.filter(pk__in=list(files), status__in=Job.ACTIVE).values_list("pk", flat=True)
    )
    for job_id, age in files.items():
        if job_id not in active and (
            age > storage.ORPHAN_GRACE_SECONDS or Job.objects.filter(pk=job_id).exists()
        ):
            storage.delete(job_id)
    return resent


def jobs_purge(*, batch_size: int) -> int:
    """Delete finished jobs (and their results) past their expiry."""
    expired = Job.objects.filter(status__in=Job.FINISHED, expires_at__lt=timezone.now())
    return delete_in_batches(expired, batch_size=batch_size)
