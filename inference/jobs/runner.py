"""One run of a transcription job, in a Celery worker: the audio through the inference
pipeline (`pipeline.transcription` / `pipeline.translation` with `on_segment`), progress per
segment as the backend decodes it, and the result stored once.

Failures that waiting can cure (429 rate limits, 502, 503, a 504 backend timeout) are
retried with exponential back-off, or after the error's `Retry-After` when that is longer, up
to `CUBEAI_TRANSCRIPTION_MAX_ATTEMPTS` (`retry_countdown`); other errors (a spent monthly
budget, bad audio, a lost permission, an unknown model) fail the job at once. A run lasts at most `CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS`.
While it runs it renews its lease; if the job is cancelled or taken over by another run,
its next write finds the job no longer its own and it stops, closing the backend's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from cubeai.exceptions import DomainError
from inference import metering, pipeline, upstream
from inference.errors import InferenceError
from inference.jobs import progress, services, storage
from inference.jobs.models import TranscriptionJob as Job
from inference.registry import registry

log = logging.getLogger(__name__)

RETRYABLE = frozenset({429, 502, 503, 504})
# 429s that no back-off cures: a monthly budget stays spent until the month rolls over.
FINAL_CODES = frozenset({"insufficient_quota"})


class JobLost(InferenceError):
    """The job was cancelled, or another run holds it now: this run stops (recorded as a
    client that left)."""

    def __init__(self) -> None:
        super().__init__("The job is no longer this run's.", status=499, code="job_lost")


def _db(function):
    return sync_to_async(function, thread_sensitive=True)


def backoff(attempt: int) -> float:
    base = settings.CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_SECONDS
    return min(base * 2 ** (attempt - 1), settings.CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_MAX_SECONDS)


def retry_countdown(error: InferenceError, attempt: int) -> float | None:
    """Seconds to wait before the next run after `error` ended run `attempt`, or None to fail
    the job now. The wait is the back-off or the error's `Retry-After`, whichever is longer,
    and never past the longest back-off (the broker's visibility timeout is checked against
    it at start-up): a longer `Retry-After` spends an attempt rather than a redelivery."""
    if error.status not in RETRYABLE or error.code in FINAL_CODES:
        return None
    if attempt >= settings.CUBEAI_TRANSCRIPTION_MAX_ATTEMPTS:
        return None
    countdown = backoff(attempt)
    # An HTTP date or garbage from a backend leaves the back-off alone.
    with contextlib.suppress(ValueError):
        countdown = max(countdown, float(error.headers.get("Retry-After", 0)))
    return min(countdown, settings.CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_MAX_SECONDS)


async def run(job_id: str) -> float | None:
    """Run the job if it is there to take; returns a countdown when it should be retried."""
    try:
        return await _run(job_id)
    finally:
        await metering.flush()
        await upstream.session_close()
        await _db(close_old_connections)()


async def _run(job_id: str) -> float | None:
    job = await _db(services.job_claim)(job_id)
    if job is None:
        return None
    attempt = job.attempts
    if attempt > settings.CUBEAI_TRANSCRIPTION_MAX_ATTEMPTS:
        await _fail(job, attempt, "max_attempts", f"The job failed {attempt - 1} times; giving up.")
        return None
    await progress.publish(job)
    try:
        caller = await _db(services.job_caller)(job)
    except DomainError as error:
        await _fail(job, attempt, error.code or "permission_denied", error.message)
        return None
    data = await asyncio.to_thread(storage.read, job.pk)
    if data is None:
        await _fail(job, attempt, "audio_missing", "The uploaded audio is no longer stored.")
        return None
    fields: dict = {"model": job.model, "response_format": "verbose_json"}
    if job.language and job.task == Job.Task.TRANSCRIBE:
        fields["language"] = job.language
    for name in ("prompt", "temperature"):
        if job.options.get(name) not in (None, ""):
            fields[name] = str(job.options[name])
    audio = pipeline.Audio(
        data=data,
        filename=job.filename or "audio",
        content_type=job.content_type or "application/octet-stream",
        fields=fields,
    )

    async def on_segment(segment: dict, duration: float) -> None:
        done = min(float(segment.get("end") or 0.0) / duration, 0.99) if duration > 0 else 0.0
        updated = await _db(services.job_progress)(
            job.pk, attempt, progress=done, duration=duration or None
        )
        if updated is None:
            raise JobLost()
        await progress.publish(updated)

    operation = pipeline.translation if job.task == Job.Task.TRANSLATE else pipeline.transcription
    await registry.refresh()
    work = asyncio.ensure_future(
        operation(
            caller, audio, request_id=job.request_id or f"job_{job.pk.hex}", on_segment=on_segment
        )
    )
    heartbeat = asyncio.ensure_future(_heartbeat(job.pk, attempt, work))
    try:
        async with asyncio.timeout(settings.CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS):
            reply = await work
    except (JobLost, asyncio.CancelledError):
        # Cancelled, or held by another run; whoever holds it now writes its end.
        log.info("transcription job %s stopped: no longer this run's", job.pk)
        return None
    except TimeoutError:
        await _fail(job, attempt, "time_limit_exceeded", "The job took longer than its time limit.")
        return None
    except InferenceError as error:
        countdown = retry_countdown(error, attempt)
        if countdown is not None:
            queued = await _db(services.job_retry_later)(
                job.pk,
                attempt,
                countdown=countdown,
                code=error.code or "backend_error",
                message=error.message,
            )
            if queued:
                await progress.publish(await _db(Job.objects.get)(pk=job.pk))
            return countdown if queued else None
        await _fail(
            job, attempt, error.code or "invalid_request", error.message, target=error.target
        )
        return None
    finally:
        heartbeat.cancel()
    body = reply.body if isinstance(reply.body, dict) else {}
    result = {
        "task": job.task,
        "language": body.get("language"),
        "duration": body.get("duration"),
        "text": body.get("text", ""),
        "segments": body.get("segments") or [],
    }
    finished = await _db(services.job_succeed)(
        job.pk, attempt, result=result, target=reply.call.target
    )
    if finished is not None:
        await progress.publish(finished)
    return None


async def _heartbeat(job_id, attempt: int, work: asyncio.Future) -> None:
    """Renew the lease while the backend works between segments; stop the work if the job
    was cancelled or taken over."""
    interval = max(settings.CUBEAI_TRANSCRIPTION_LEASE_SECONDS / 3, 0.2)
    while not work.done():
        await asyncio.sleep(interval)
        if not await _db(services.job_heartbeat)(job_id, attempt):
            work.cancel()
            return


async def _fail(job: Job, attempt: int, code: str, message: str, *, target=None) -> None:
    """End the job as failed, with the backend that failed it when one was tried."""
    failed = await _db(services.job_fail)(
        job.pk, attempt, code=code, message=message, target=target
    )
    if failed is not None:
        await progress.publish(failed)
