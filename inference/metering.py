"""Usage and audit events, written off the request path in batches.

Requests append a small dict (never prompt or completion text) to a per-process buffer; a
flush scheduled on the event loop writes the buffer with one bulk insert every
`CUBEAI_USAGE_FLUSH_SECONDS`, on an executor of its own (`inference.offpath`), so no
request waits for it. A crash loses at most that window of metering.
"""

import asyncio
import contextvars
import logging
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from cubeai.lib.batches import delete_in_batches
from inference import offpath

log = logging.getLogger(__name__)

_buffer: list[dict] = []
# Events kept in memory while the database cannot take them (about 1 KB each).
KEEP_AT_MOST = 50_000
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
    _schedule(loop)


def _schedule(loop: asyncio.AbstractEventLoop) -> None:
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


def write(batch: list[dict]) -> bool:
    """Insert the batch; False if the database was unreachable (kept, tried again)."""
    from inference.models import UsageEvent

    if batch:
        try:
            UsageEvent.objects.bulk_create([UsageEvent(**event) for event in batch])
        except (OperationalError, InterfaceError):
            # The database away (a restart, a failover): the batch is tried again. The count
            # is logged, never the content.
            log.warning("could not reach the database for %d usage events; kept", len(batch))
            return False
        except Exception:
            # Anything else (a row whose domain was deleted meanwhile) would fail again:
            # metering must never break serving, so the batch is dropped, and logged.
            log.exception("could not write %d usage events", len(batch))
    return True


async def flush() -> None:
    """Write everything buffered so far. A batch that could not be written (the database
    restarting, say) goes back to the front of the buffer, up to `KEEP_AT_MOST` events, and
    is tried again at the next flush: an outage loses no usage row unless it outlasts that."""
    batch = drain()
    if not await offpath.run("metering", write, batch):
        kept = batch[-KEEP_AT_MOST:]
        if len(kept) < len(batch):
            log.error("dropped %d usage events after a long outage", len(batch) - len(kept))
        _buffer[:0] = kept
        del _buffer[KEEP_AT_MOST:]
        _schedule(asyncio.get_running_loop())


def usage_events_purge(*, older_than_days: int, batch_size: int) -> int:
    """Delete usage events older than the retention period, in batches; returns how many."""
    from inference.models import UsageEvent

    cutoff = timezone.now() - timedelta(days=older_than_days)
    return delete_in_batches(
        UsageEvent.objects.filter(created_at__lt=cutoff), batch_size=batch_size
    )
