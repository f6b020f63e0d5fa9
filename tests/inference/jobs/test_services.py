"""The job's state changes on the row: a job claimed, finished or re-sent once whatever runs
twice; the sweeper and the purge."""

import datetime
import os
import time
import uuid

import pytest
from django.utils import timezone

from inference.jobs import services, storage
from inference.jobs.models import TranscriptionJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(domain, alice):
    job = TranscriptionJob.objects.create(domain=domain, owner=alice, model="m", filename="a.wav")
    storage.save(job.pk, [b"RIFF....WAVE"])
    yield job
    storage.delete(job.pk)


def test_a_job_is_claimed_once_and_only_its_claimant_finishes_it(job, monkeypatch):
    sent = []
    monkeypatch.setattr(services, "send", lambda job_id, **kw: sent.append(str(job_id)))
    first = services.job_claim(job.pk)
    assert (first.status, first.attempts) == ("running", 1)
    assert services.job_claim(job.pk) is None  # held by a live lease
    # The lease lapses (a killed worker): the sweeper re-sends it, and a new run claims it.
    TranscriptionJob.objects.filter(pk=job.pk).update(
        lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    assert services.jobs_sweep() == 1
    assert sent == [str(job.pk)]
    second = services.job_claim(job.pk)
    assert second.attempts == 2
    # The first run, come back to life, can neither report nor store anything.
    assert services.job_progress(job.pk, 1, progress=0.5, duration=10.0) is None
    result = {"text": "hello", "segments": [], "duration": 1.0}
    assert services.job_succeed(job.pk, 1, result=result, target=None) is None
    done = services.job_succeed(job.pk, 2, result=result, target=None)
    assert (done.status, done.progress, done.result["text"]) == ("succeeded", 1.0, "hello")
    assert services.job_succeed(job.pk, 2, result={"text": "again"}, target=None) is None
    assert TranscriptionJob.objects.get(pk=job.pk).result["text"] == "hello"
    assert not storage.path_of(job.pk).exists()
    assert done.expires_at > done.finished_at


def test_a_retry_puts_the_job_back_in_the_queue_with_the_reason(job):
    services.job_claim(job.pk)
    assert services.job_retry_later(job.pk, 1, countdown=10, code="x", message="busy")
    row = TranscriptionJob.objects.get(pk=job.pk)
    assert row.status == "queued"
    assert row.error == {"code": "x", "message": "busy", "retrying": True}
    assert row.lease_expires_at > timezone.now() + datetime.timedelta(seconds=10)
    assert storage.path_of(job.pk).exists()


def test_the_sweeper_deletes_audio_no_active_job_owns(job, alice, domain):
    stray = uuid.uuid4()
    storage.save(stray, [b"x"])
    old = time.time() - storage.ORPHAN_GRACE_SECONDS - 5
    os.utime(storage.path_of(stray), (old, old))
    young = uuid.uuid4()
    storage.save(young, [b"x"])  # a job being created right now
    finished = TranscriptionJob.objects.create(
        domain=domain, owner=alice, model="m", status="failed"
    )
    storage.save(finished.pk, [b"x"])
    services.jobs_sweep()
    assert not storage.path_of(stray).exists()
    assert not storage.path_of(finished.pk).exists()
    assert storage.path_of(young).exists()
    assert storage.path_of(job.pk).exists()
    storage.delete(young)


def test_the_purge_deletes_expired_finished_jobs_only(job, alice, domain):
    past = timezone.now() - datetime.timedelta(seconds=1)
    expired = TranscriptionJob.objects.create(
        domain=domain, owner=alice, model="m", status="succeeded", expires_at=past
    )
    kept = TranscriptionJob.objects.create(
        domain=domain,
        owner=alice,
        model="m",
        status="succeeded",
        expires_at=past + datetime.timedelta(days=1),
    )
    TranscriptionJob.objects.filter(pk=job.pk).update(expires_at=past)  # active: never purged
    assert services.jobs_purge(batch_size=10) == 1
    remaining = set(TranscriptionJob.objects.values_list("pk", flat=True))
    assert expired.pk not in remaining
    assert {kept.pk, job.pk} <= remaining


def test_the_run_task_is_acked_late_rejected_when_its_worker_is_lost_and_time_limited(settings):
    from inference.jobs.tasks import transcription_job_run

    # Acknowledged once run, and given back to the broker when its worker dies, so a killed
    # worker's job runs again elsewhere; the hard limit kills a prefork child 60 s after the
    # run's own time limit.
    assert transcription_job_run.acks_late is True
    assert transcription_job_run.reject_on_worker_lost is True
    assert transcription_job_run.time_limit == settings.CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS + 60
    assert transcription_job_run.max_retries is None


def test_an_owner_with_too_many_active_jobs_is_refused_before_anything_is_stored(
    domain, alice, settings
):
    settings.CUBEAI_TRANSCRIPTION_MAX_ACTIVE_JOBS = 2
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        TranscriptionJob.objects.create(domain=domain, owner=alice, model="m", status=status)
    files = set(storage.stored_ids())
    fields = {
        "domain_id": str(domain.pk),
        "owner_id": alice.pk,
        "token_id": None,
        "model": "m",
        "task": "transcribe",
        "language": "",
        "response_format": "json",
        "options": {},
        "filename": "a.wav",
        "content_type": "audio/wav",
        "size": 12,
        "request_id": "req_cap",
    }
    with pytest.raises(services.InferenceError) as refused:
        services.job_create(**fields, chunks=[b"RIFF....WAVE"])
    error = refused.value
    assert (error.status, error.code, error.extra) == (
        429,
        "too_many_active_jobs",
        {"limit": "active_jobs"},
    )
    assert "CUBEAI_TRANSCRIPTION_MAX_ACTIVE_JOBS = 2" in error.message
    assert TranscriptionJob.objects.count() == 5
    assert set(storage.stored_ids()) == files
    # One ends: the next is taken.
    TranscriptionJob.objects.filter(status="running").update(status="succeeded")
    job = services.job_create(**fields, chunks=[b"RIFF....WAVE"])
    assert job.status == "queued" and storage.path_of(job.pk).exists()
    storage.delete(job.pk)
