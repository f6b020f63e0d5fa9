"""The metering writer: a process beside each web process that writes its usage and audit
events to the database.

A flush of a second's events is mostly Python work (preparing each row's values, the daily
aggregates), and in the web process that work holds the interpreter lock the requests need:
the requests served during a flush were the slowest (`bench/README.md`). So the web process
only serializes each batch (orjson, well under a millisecond for a second's events) and
writes it to this process's standard input, from the metering executor's thread; the
writer does the rest with `inference.metering.write`, the code every other process uses.

Frames are a 4-byte big-endian length and an orjson object `{"usage": [...], "audit":
[...]}`. A reader thread takes them in as they come, so the web process never waits on the
database; the main thread writes what has come, and keeps what the database could not take
(a restart, a failover) to try again every `CUBEAI_USAGE_FLUSH_SECONDS`, up to
`metering.KEEP_AT_MOST` events. The writer ignores SIGINT and SIGTERM, which reach the
whole process group when the platform stops: it ends when its input does, after the web
process's last flush, writing what it still has (trying for up to
`CUBEAI_METERING_WRITER_DRAIN_SECONDS`). If the web process dies, its input ends too, so
no writer outlives its web process by more than that. A writer that died is started again
at the next flush, which hands its batch over then; a batch it had taken and not yet
written is lost, as a crashed web process loses its buffer.

Run as `python -m inference.metering_writer`; `start()` does that.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import orjson

log = logging.getLogger(__name__)

FRAME = struct.Struct(">I")
# The writer's own events, stopped at the web process's exit after this long at most.
STOP_TIMEOUT_SECONDS = 30

_process: subprocess.Popen | None = None
_lock = threading.Lock()


# The web process's side -----------------------------------------------------------------


def start() -> None:
    """Start this process's writer (the web process's start-up does)."""
    global _process
    from django.conf import settings

    env = dict(os.environ)
    # The writer reports no metrics: it must not leave files in a multiprocess folder.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("prometheus_multiproc_dir", None)
    _process = subprocess.Popen(
        [sys.executable, "-m", "inference.metering_writer"],
        cwd=settings.BASE_DIR,
        env=env,
        stdin=subprocess.PIPE,
    )


def running() -> bool:
    return _process is not None


def pid() -> int | None:
    return _process.pid if _process is not None else None


def send(usage: list[dict], audits: list[dict]) -> bool:
    """Hand a batch to the writer (on the metering executor: the pipe may block while the
    writer starts). A writer that died is started again for it; False if that fails too,
    and the caller writes the batch itself."""
    global _process
    try:
        data = frame(usage, audits)
    except TypeError:
        log.exception("could not serialize %d usage events for the writer", len(usage))
        return False
    with _lock:
        for _ in range(2):
            if _process is None:
                return False
            if _process.poll() is None:
                try:
                    _process.stdin.write(data)
                    _process.stdin.flush()
                    return True
                except OSError:
                    pass
            log.warning("the metering writer (pid %d) had stopped; starting another", _process.pid)
            _reap(_process)
            try:
                start()
            except OSError:
                log.exception("could not start the metering writer")
                _process = None
        return False


def frame(usage: list[dict], audits: list[dict]) -> bytes:
    """One batch as the writer reads it."""
    data = orjson.dumps({"usage": usage, "audit": audits}, default=str)
    return FRAME.pack(len(data)) + data


def stop(timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """End the writer's input and wait for it to write what it has (the web process's
    shutdown, after its last flush)."""
    global _process
    with _lock:
        if _process is None:
            return
        process, _process = _process, None
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.error("the metering writer did not finish within %s s; stopped", timeout)
        process.kill()
        process.wait()


def _reap(process: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        process.stdin.close()
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


# The writer's side -------------------------------------------------------------------------


class Inbox:
    """Events read and not yet written, and whether the input has ended."""

    def __init__(self) -> None:
        self.usage: list[dict] = []
        self.audit: list[dict] = []
        self.ended = False
        self.changed = threading.Condition()

    def put(self, usage: list[dict], audit: list[dict]) -> None:
        from inference.metering import keep

        with self.changed:
            self.usage.extend(usage)
            self.audit.extend(audit)
            # The oldest go if the database has been away that long.
            keep(self.usage, [], "usage")
            keep(self.audit, [], "audit")
            self.changed.notify()

    def end(self) -> None:
        with self.changed:
            self.ended = True
            self.changed.notify()

    def take(self, timeout: float) -> tuple[list[dict], list[dict], bool]:
        with self.changed:
            if not (self.usage or self.audit or self.ended):
                self.changed.wait(timeout)
            usage, audit = self.usage, self.audit
            self.usage, self.audit = [], []
            return usage, audit, self.ended

    def give_back(self, usage: list[dict], audit: list[dict]) -> None:
        from inference.metering import keep

        with self.changed:
            keep(self.usage, usage, "usage")
            keep(self.audit, audit, "audit")


def read_frames(stream, inbox: Inbox) -> None:
    """Read frames from `stream` (binary) into `inbox` until it ends."""
    try:
        while True:
            head = stream.read(FRAME.size)
            if len(head) < FRAME.size:
                return
            (size,) = FRAME.unpack(head)
            data = stream.read(size)
            if len(data) < size:
                return
            frame = orjson.loads(data)
            inbox.put(_events(frame.get("usage")), _events(frame.get("audit")))
    except Exception:
        log.exception("the metering writer could not read its input")
    finally:
        inbox.end()


def _events(events: list[dict] | None) -> list[dict]:
    for event in events or ():
        if isinstance(event.get("created_at"), str):
            event["created_at"] = datetime.datetime.fromisoformat(event["created_at"])
    return events or []


def serve(stream, *, retry_seconds: float, drain_seconds: float) -> None:
    """Write the events read from `stream` until it ends and they are written (or, once it
    has ended, `drain_seconds` have passed)."""
    from django.db import close_old_connections, connections

    from inference.metering import write

    inbox = Inbox()
    threading.Thread(target=read_frames, args=(stream, inbox), daemon=True).start()
    ended_at = None
    while True:
        usage, audit, ended = inbox.take(retry_seconds)
        if usage or audit:
            usage, audit = write(usage, audit)
            if usage or audit:
                inbox.give_back(usage, audit)
                # A connection the outage broke is opened again at the next try.
                for connection in connections.all(initialized_only=True):
                    if not connection.is_usable():
                        connection.close()
                if not ended:
                    time.sleep(retry_seconds)
        if ended:
            ended_at = ended_at or time.monotonic()
            if not (inbox.usage or inbox.audit):
                break
            if time.monotonic() - ended_at > drain_seconds:
                log.error(
                    "the database stayed away: %d usage and %d audit events not written",
                    len(inbox.usage),
                    len(inbox.audit),
                )
                break
            time.sleep(min(retry_seconds, 1.0))
    close_old_connections()


def main() -> None:
    # The platform stops by signalling its process group: this process ends when its web
    # process's last flush has reached it, that is, when its input ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cubeai.settings")
    import django

    django.setup()
    from django.conf import settings

    serve(
        sys.stdin.buffer,
        retry_seconds=settings.CUBEAI_USAGE_FLUSH_SECONDS,
        drain_seconds=settings.CUBEAI_METERING_WRITER_DRAIN_SECONDS,
    )


if __name__ == "__main__":
    main()
