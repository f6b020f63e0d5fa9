"""Periodic housekeeping of domains, run by Celery beat, never inside a request."""

from celery import shared_task
from django.conf import settings

from domains import services


@shared_task
def invitations_purge() -> int:
    """Delete invitations closed longer ago than `CUBEAI_RETENTION_INVITATION_DAYS`."""
    return services.invitations_purge(
        older_than_days=settings.CUBEAI_RETENTION_INVITATION_DAYS,
        batch_size=settings.CUBEAI_RETENTION_BATCH_SIZE,
    )
