"""Periodic token housekeeping, run by Celery beat, never inside a request."""

from celery import shared_task

from tokens import services


@shared_task
def tokens_expire_and_warn() -> dict[str, int]:
    return services.tokens_expire_and_warn()
