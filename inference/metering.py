"""Usage and audit events, written off the request path in batches.

Requests append a small dict (never prompt or completion text) to a per-process buffer; a
flush scheduled on the event loop takes the buffer every `CUBEAI_USAGE_FLUSH_SECONDS`, on an
executor of its own (`inference.offpath`), so no request waits for it. In a web process the
flush hands the batch to the process's metering writer (`inference.metering_writer`), a
process of its own that does the database work: its Python work would otherwise hold the
interpreter lock that the requests need. Elsewhere (Celery workers, the in-process tests,
or when the writer cannot be reached) the flush writes the batch itself. A crash loses at
most that window of metering.
"""

import asyncio
import contextvars
import logging
import re
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from cubeai.lib.batches import delete_in_batches, insert_rows
from inference import metering_writer, offpath

log = logging.getLogger(__name__)

CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_buffer: list[dict] = []
# Audit events the request path raises (a budget's 80 % warning), written with the usage.
_audit_buffer: list[dict] = []

# Events kept in memory while the database cannot take them (about 1 KB each).
KEEP_AT_MOST = 50_000
_scheduled: set[asyncio.AbstractEventLoop] = set()


def record(**event) -> None:
    """Queue one event; see inference.models.UsageEvent for the fields. Its texts lose any
    control character: one NUL failed PostgreSQL's insert of the whole batch."""
    event.setdefault("created_at", timezone.now())
    for name in ("model", "backend", "request_id", "endpoint"):
        if isinstance(event.get(name), str):
            event[name] = CONTROL.sub("", event[name])
    _buffer.append(event)
    _flush_soon()


def audit(**event) -> None:
    """Queue one audit event (domains.models.AuditEvent's fields, no actor), written with
    the next batch of usage: the request path itself writes nothing."""
    event.setdefault("created_at", timezone.now())
    _audit_buffer.append(event)
    _flush_soon()


def _flush_soon() -> None:
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


def drain_audits() -> list[dict]:
    audits = _audit_buffer[:]
    _audit_buffer.clear()
    return audits


def keep(buffer: list[dict], events: list[dict], what: str) -> None:
    """Put events that could not be written back at the front of `buffer`, which holds at
    most `KEEP_AT_MOST`: the oldest go first (counted in the log, never their content)."""
    buffer[:0] = events
    if len(buffer) > KEEP_AT_MOST:
        log.error("dropped %d %s events after a long outage", len(buffer) - KEEP_AT_MOST, what)
        del buffer[: len(buffer) - KEEP_AT_MOST]


def write(batch: list[dict], audits: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """Insert the usage and audit events (by default the audit events buffered here);
    return those to try again because the database was unreachable (usage, audit)."""
    from inference.models import UsageEvent
    from inference.usage import usage_daily_add

    if audits is None:
        audits = drain_audits()
    if audits:
        from domains.models import AuditEvent

        try:
            AuditEvent.objects.bulk_create([AuditEvent(**event) for event in audits])
            audits = []
        except (OperationalError, InterfaceError):
            log.warning("could not reach the database for %d audit events; kept", len(audits))
        except Exception:
            log.exception("could not write %d audit events; dropped", len(audits))
            audits = []
    if batch:
        try:
            # The raw rows and the daily aggregates (inference/usage.py) agree, or neither
            # is written.
            with transaction.atomic():
                insert_rows(UsageEvent, batch)
                usage_daily_add(batch)
            batch = []
        except (OperationalError, InterfaceError):
            # The database away (a restart, a failover): the batch is tried again. The count
            # is logged, never the content.
            log.warning("could not reach the database for %d usage events; kept", len(batch))
        except Exception:
            # Anything else (a row whose domain was deleted meanwhile) would fail again:
            # metering must never break serving, so the batch is dropped, and logged.
            log.exception("could not write %d usage events", len(batch))
            batch = []
    return batch, audits


async def flush() -> None:
    """Write everything buffered so far, through the metering writer where this process
    has one. A batch that could not be written (the database restarting, say) goes back to
    the front of the buffer, up to `KEEP_AT_MOST` events, and is tried again at the next
    flush: an outage loses no usage row unless it outlasts that."""
    batch, audits = drain(), drain_audits()
    if not batch and not audits:
        return
    if metering_writer.running() and await offpath.run(
        "metering", metering_writer.send, batch, audits
    ):
        return
    batch, audits = await offpath.run("metering", write, batch, audits)
    if batch or audits:
        keep(_buffer, batch, "usage")
        keep(_audit_buffer, audits, "audit")
        _schedule(asyncio.get_running_loop())


def usage_events_purge(*, older_than_days: int, batch_size: int) -> int:
    """Delete usage events older than the retention period, in batches; returns how many."""
    from inference.models import UsageEvent

    cutoff = timezone.now() - timedelta(days=older_than_days)
    return delete_in_batches(
        UsageEvent.objects.filter(created_at__lt=cutoff), batch_size=batch_size
    )
