"""The real Celery worker process counts its jobs by state and times them (any task,
through Celery's signals), and serves them on its own port behind the metrics credential."""

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import _stop, _subprocess_env
from tests.inference.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "worker-metrics-token-0123456789abcdef"


def test_the_worker_serves_jobs_by_state_and_duration(django_db_setup, tmp_path):
    from cubeai.celery import app

    port, queue = free_port(), f"test-{uuid.uuid4().hex[:12]}"
    (tmp_path / "metrics").mkdir()
    env = _subprocess_env(
        CUBEAI_METRICS_WORKER_PORT=str(port),
        CUBEAI_METRICS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    celery = Path(sys.executable).parent / "celery"
    command = [str(celery), "-A", "cubeai", "worker", "--pool", "prefork", "--concurrency", "1"]
    command += ["--queues", queue, "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    command += ["--hostname", f"{queue}@%h"]
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 403:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        result = app.send_task("domains.tasks.invitations_purge", queue=queue)
        result.get(timeout=60)
        text = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        jobs = {
            (s.labels["task"], s.labels["state"]): s.value
            for s in families["cubeai_jobs"].samples
            if s.name == "cubeai_jobs_total"
        }
        assert jobs[("domains.tasks.invitations_purge", "started")] >= 1
        assert jobs[("domains.tasks.invitations_purge", "success")] >= 1
        durations = {
            s.labels["task"]: s.value
            for s in families["cubeai_job_duration_seconds"].samples
            if s.name == "cubeai_job_duration_seconds_count"
        }
        assert durations["domains.tasks.invitations_purge"] >= 1
    finally:
        _stop(process)
