"""Fixtures of the transcription-job tests: a gateway and real Celery workers on a queue of
this module's own, the committed end-to-end cast with the real agent, long speech."""

import subprocess
import uuid

import pytest

from domains.models import Domain, User
from inference.models import Backend, Model
from tests.conftest import _stop
from tests.inference.conftest import build_stack, start_gateway
from tests.inference.jobs.workers import Worker

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
LEASE_SECONDS = "2"


@pytest.fixture(scope="module")
def queue():
    return f"jobs-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def gateway_dir(tmp_path_factory):
    """Where the jobs' gateway writes its log (`web.log`)."""
    return tmp_path_factory.mktemp("jobs-gateway")


@pytest.fixture(scope="module")
def jobs_stack(
    django_db_setup, django_db_blocker, gateway_dir, queue, agent_url, fake_upstream_url
):
    with django_db_blocker.unblock():
        process, url = start_gateway(gateway_dir, CUBEAI_CELERY_QUEUE=queue)
        built = build_stack(url, agent_url, fake_upstream_url)
    yield built.routed()
    _stop(process)
    with django_db_blocker.unblock():
        User.objects.filter(email__startswith="e2e-").delete()
        Domain.objects.filter(route__startswith="e2e-").delete()
        Backend.objects.filter(name__startswith="e2e-").delete()
        Model.objects.all().delete()


@pytest.fixture(scope="module")
def worker(jobs_stack, queue, tmp_path_factory):
    worker = Worker(
        queue,
        tmp_path_factory.mktemp("jobs-worker"),
        CUBEAI_TRANSCRIPTION_LEASE_SECONDS=LEASE_SECONDS,
        CUBEAI_USAGE_FLUSH_SECONDS="0.2",
        CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_SECONDS="1",
        CUBEAI_TRANSCRIPTION_MAX_ATTEMPTS="3",
    ).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def long_speech(speech):
    """About 80 s of speech, which Whisper decodes in three 30 s windows (segments come per
    window), as Ogg Vorbis (any format the agent decodes will do; this one is small)."""
    wav = speech(" ".join([SENTENCE] * 22))
    ogg = wav.with_suffix(".ogg")
    subprocess.run(["sox", str(wav), str(ogg)], check=True)
    return ogg.read_bytes()
