"""The Celery tasks of transcription jobs: one run per message, the sweeper and the purge."""

import asyncio

from celery import shared_task
from django.conf import settings

from inference.jobs import runner, services


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    # The hard limit of a prefork child; the run itself stops at the time limit (any pool).
    time_limit=settings.CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS + 60,
)
def transcription_job_run(self, job_id: str) -> None:
    """Run one transcription job; safe to run twice (the job's row decides who runs it)."""
    countdown = asyncio.run(runner.run(job_id))
    if countdown is not None:
        raise self.retry(countdown=countdown)


@shared_task
def transcription_jobs_sweep() -> int:
    return services.jobs_sweep()


@shared_task
def transcription_jobs_purge() -> int:
    return services.jobs_purge(batch_size=settings.CUBEAI_RETENTION_BATCH_SIZE)
