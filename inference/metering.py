"""Usage and audit events, written off the request path in batches.

Requests append a small dict (never prompt or completion text) to a per-process buffer; a
flush scheduled on the event loop writes the buffer with one bulk insert every
`CUBEAI_USAGE_FLUSH_SECONDS`. A crash loses at most that window of metering.
"""

import asyncio
import contextvars
import logging
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cubeai.lib.batches import delete_in_batches

log = logging.getLogger(__name__)

_buffer: list[dict] = []
_scheduled: set[asyncio.AbstractEventLoop] = set()


def record(**event) -> None:
    """Queue one event; see inference.models.UsageEvent for the fields."""
    event.setdefault("created_at", timezone.now())
    _buffer.append(event)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        write(drain())
        return
    if loop not in _scheduled:
        _scheduled.add(loop)
        # A fresh context: the request's own (and its asgiref executor) ends with the request.
        loop.call_later(
            settings.CUBEAI_USAGE_FLUSH_SECONDS, _start_flush, loop, context=contextvars.Context()
        )


def _start_flush(loop: asyncio.AbstractEventLoop) -> None:
    _scheduled.discard(loop)
    loop.create_task(flush())


def drain() -> list[dict]:
    batch = _buffer[:]
    _buffer.clear()
    return batch


def write(batch: list[dict]) -> None:
    from inference.models import UsageEvent
    from inference.usage import usage_daily_add

    if batch:
        try:
            # The raw rows and the daily aggregates (inference/usage.py) agree, or neither
            # is written.
            with transaction.atomic():
                UsageEvent.objects.bulk_create([UsageEvent(**event) for event in batch])
                usage_daily_add(batch)
        except Exception:
            # Metering must never break serving; the count is logged, never the content.
            log.exception("could not write %d usage events", len(batch))


async def flush() -> None:
    """Write everything buffered so far."""
    await sync_to_async(write, thread_sensitive=True)(drain())


def usage_events_purge(*, older_than_days: int, batch_size: int) -> int:
    """Delete usage events older than the retention period, in batches; returns how many."""
    from inference.models import UsageEvent

    cutoff = timezone.now() - timedelta(days=older_than_days)
    return delete_in_batches(
        UsageEvent.objects.filter(created_at__lt=cutoff), batch_size=batch_size
    )
