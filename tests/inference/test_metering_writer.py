"""The metering writer (inference/metering_writer.py): the process beside each web process
that writes its usage and audit events, so that the flush's Python work never holds the
interpreter lock the web process's requests need."""

import io
import logging
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.db import OperationalError
from django.utils import timezone

from domains.models import AuditEvent
from inference import metering, metering_writer
from inference.models import UsageDaily, UsageEvent
from tests.conftest import _stop
from tests.inference.conftest import committed, metering_writers, start_gateway, usage_row


def usage(domain, request_id: str, **fields) -> dict:
    return {
        "domain_id": str(domain.pk),
        "request_id": request_id,
        "endpoint": "chat.completions",
        "model": "m",
        "status": 200,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "latency_ms": 12.5,
        "guardrails": {"input": {"action": "allow", "rails": ["pii"]}},
        "created_at": timezone.now(),
        **fields,
    }


def serve(*frames: bytes, **options) -> None:
    metering_writer.serve(
        io.BytesIO(b"".join(frames)),
        retry_seconds=options.get("retry_seconds", 0.05),
        drain_seconds=options.get("drain_seconds", 2),
    )


@pytest.mark.django_db(transaction=True)
def test_the_writer_writes_each_frame_as_the_web_process_recorded_it(domain):
    at = timezone.now().replace(microsecond=654321)
    first = usage(domain, "w-1", created_at=at, stream=True)
    audit = {
        "domain_id": domain.pk,  # a UUID, as the limits gate has it
        "action": "quota.warning",
        "target": "token 7",
        "details": {"used": 85},
        "created_at": at,
    }
    serve(
        metering_writer.frame([first], [audit]),
        metering_writer.frame([usage(domain, "w-2"), usage(domain, "w-3")], []),
    )
    rows = {row.request_id: row for row in UsageEvent.objects.filter(domain=domain)}
    assert sorted(rows) == ["w-1", "w-2", "w-3"]
    assert rows["w-1"].created_at == at
    assert rows["w-1"].stream is True
    assert rows["w-1"].guardrails == {"input": {"action": "allow", "rails": ["pii"]}}
    assert rows["w-1"].total_tokens == 7 and rows["w-1"].latency_ms == 12.5
    (daily,) = UsageDaily.objects.filter(domain=domain)
    assert daily.requests == 3 and daily.total_tokens == 21
    (warning,) = AuditEvent.objects.filter(domain=domain, action="quota.warning")
    assert (warning.action, warning.target, warning.details) == (
        "quota.warning",
        "token 7",
        {"used": 85},
    )
    assert warning.created_at == at


@pytest.mark.django_db(transaction=True)
def test_the_writer_keeps_what_the_database_could_not_take_and_writes_it_once_back(
    domain, monkeypatch
):
    real = metering.insert_rows
    calls = []

    def away_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("the database system is shutting down")
        return real(*args, **kwargs)

    monkeypatch.setattr(metering, "insert_rows", away_once)
    serve(metering_writer.frame([usage(domain, "kept")], []))
    assert list(UsageEvent.objects.filter(domain=domain).values_list("request_id", flat=True)) == [
        "kept"
    ]
    assert len(calls) == 2


@pytest.mark.django_db(transaction=True)
def test_a_writer_whose_database_stays_away_ends_after_its_drain_period(
    domain, monkeypatch, caplog
):
    def away(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(metering, "insert_rows", away)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="inference.metering_writer"):
        serve(metering_writer.frame([usage(domain, "lost")], []), drain_seconds=0.5)
    assert 0.5 <= time.monotonic() - started < 10
    assert "1 usage and 0 audit events not written" in caplog.text
    assert "lost" not in caplog.text  # a count, never the content
    assert not UsageEvent.objects.filter(domain=domain).exists()


# --- In a real web process ---------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text()
    return "\nState:\tZ" not in status


def eventually(check, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def chat(url: str, stack, request_id: str) -> None:
    response = httpx.post(
        f"{url}/proxy/{stack.alpha.pk}/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {stack.alice_token}", "x-request-id": request_id},
        timeout=30,
    )
    assert response.status_code == 200, response.text


@pytest.mark.e2e
@pytest.mark.django_db
def test_a_web_process_writes_through_its_writer_which_is_replaced_and_drained(
    stack, django_db_blocker, tmp_path
):
    with django_db_blocker.unblock():
        # Flushes 5 s apart: the last request's row can only come from the shutdown's flush.
        process, url = start_gateway(tmp_path, CUBEAI_USAGE_FLUSH_SECONDS="5")
    try:
        (writer,) = eventually(lambda: metering_writers(process.pid))
        first = f"req-writer-{uuid.uuid4().hex[:8]}"
        chat(url, stack, first)
        assert usage_row(first)["status"] == 200

        # A writer that died is started again, and what the flush had is written.
        os.kill(writer, signal.SIGKILL)
        assert eventually(lambda: not alive(writer))
        second = f"req-writer-{uuid.uuid4().hex[:8]}"
        chat(url, stack, second)
        assert usage_row(second)["status"] == 200
        (replacement,) = eventually(lambda: metering_writers(process.pid))
        assert replacement != writer

        # SIGINT and SIGTERM reach the whole group when the platform stops: the writer waits
        # for its web process's last flush, and writes it.
        last = f"req-writer-{uuid.uuid4().hex[:8]}"
        chat(url, stack, last)
        os.kill(replacement, signal.SIGINT)
        os.kill(replacement, signal.SIGTERM)
        time.sleep(0.5)
        assert alive(replacement)
        process.terminate()
        process.wait(timeout=30)
        assert eventually(lambda: not alive(replacement))
        rows = committed(lambda: list(UsageEvent.objects.filter(request_id=last).values("status")))
        assert rows == [{"status": 200}]
    finally:
        _stop(process)
