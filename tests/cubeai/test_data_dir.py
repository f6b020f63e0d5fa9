"""Everything the embedded default keeps on disk is created by the code that uses it.

Each test starts real processes, with production settings, on a CUBEAI_DATA_DIR that does not
exist yet: no step of a user's and no fixture creates a folder first.
"""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import _stop

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).parent / "celery")


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data directory two levels below anything that exists."""
    missing = tmp_path / "volume" / "cubeai"
    assert not missing.parent.exists()
    return missing


def node_env(data_dir: Path) -> dict[str, str]:
    """A production node on the embedded defaults (no DATABASE_URL, no REDIS_URL)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CUBEAI_TEST_DATABASE_NAME")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="cubeai.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="data-dir-test-secret-key-" + "x" * 40,
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="false",
        CUBEAI_TOKEN_PEPPERS="t1:" + "p" * 40,
        CUBEAI_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"{process.args[:4]} did not get there:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


def test_migrate_creates_the_database_and_its_folder(data_dir):
    run([sys.executable, "manage.py", "migrate", "--noinput"], node_env(data_dir))
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        applied = db.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
    assert applied > 0


def test_the_web_server_serves_on_a_missing_data_dir(data_dir, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "cubeai.asgi:application", "--port", str(port)]
    log = tmp_path / "web.log"
    server = start(command, node_env(data_dir), log)
    answers: list[dict] = []

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                answers.append(json.loads(response.read()))
                return True
        except OSError:
            return False

    try:
        wait_until(ready, server, log)
    finally:
        _stop(server)
    assert answers[-1] == {"status": "ok", "checks": {"database": "ok"}}
    assert (data_dir / "db.sqlite3").is_file()


def test_a_worker_started_alone_creates_its_broker_folders_and_runs_a_task(data_dir, tmp_path):
    env = node_env(data_dir)
    log = tmp_path / "worker.log"
    command = [CELERY, "-A", "cubeai", "worker", "--pool", "solo", "--loglevel", "INFO"]
    worker = start([*command, "--without-gossip", "--without-mingle"], env, log)
    try:
        wait_until(lambda: " ready." in log.read_text(), worker, log)
        celery = data_dir / "celery"
        assert sorted(p.name for p in celery.iterdir() if p.is_dir()) == [
            "control",
            "queue",
            "results",
        ]
        run([sys.executable, "manage.py", "migrate", "--noinput"], env)
        send = (
            "import django, json; django.setup();"
            "from tokens.tasks import tokens_expire_and_warn;"
            "print(json.dumps(tokens_expire_and_warn.delay().get(timeout=30)))"
        )
        result = run([sys.executable, "-c", send], env)
    finally:
        _stop(worker)
    assert json.loads(result.stdout) == {"expired": 0, "warned": 0}
    assert "tokens.tasks.tokens_expire_and_warn" in log.read_text()
    # The result went through the file result backend's folder.
    assert list((data_dir / "celery" / "results").iterdir())


def test_beat_started_alone_keeps_its_schedule(data_dir, tmp_path):
    log = tmp_path / "beat.log"
    beat = start([CELERY, "-A", "cubeai", "beat", "--loglevel", "INFO"], node_env(data_dir), log)
    schedule = data_dir / "celery"

    def scheduled() -> bool:
        return schedule.is_dir() and any(
            p.name.startswith("beat-schedule") for p in schedule.iterdir()
        )

    try:
        wait_until(lambda: scheduled() and "beat: Starting" in log.read_text(), beat, log)
        time.sleep(0.5)
        assert beat.poll() is None, log.read_text()[-4000:]
    finally:
        _stop(beat)
    assert "Traceback" not in log.read_text()
