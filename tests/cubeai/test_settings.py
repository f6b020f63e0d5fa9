"""Settings switch on the environment, and bad values stop start-up with one clear line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; from django.conf import settings; django.setup(); print(json.dumps({"
    "'db': settings.DATABASES['default']['ENGINE'], 'cache': settings.CACHES['default']['BACKEND'],"
    "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], 'broker': settings.CELERY_BROKER_URL,"
    "'eager': settings.CELERY_TASK_ALWAYS_EAGER}))"
)


def run_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    clean.update(env, DJANGO_SETTINGS_MODULE="cubeai.settings")
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_runs_on_the_embedded_defaults_with_nothing_set():
    result = run_settings()
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config == {
        "db": "cubeai.sqlite3",
        "cache": "django.core.cache.backends.locmem.LocMemCache",
        "layer": "channels.layers.InMemoryChannelLayer",
        "broker": "filesystem://",
        "eager": False,
    }


def test_it_switches_to_postgres_and_redis():
    result = run_settings(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/cubeai",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["db"] == "django.db.backends.postgresql"
    assert config["cache"] == "cubeai.cache.DegradingRedisCache"
    assert config["layer"] == "channels_redis.core.RedisChannelLayer"
    assert config["broker"] == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://user@host:notaport/db"),
        ("DATABASE_URL", "mysql-ish nonsense"),
        ("REDIS_URL", "redis://host:99999999/0"),
        ("REDIS_URL", "http://example.com"),
    ],
)
def test_it_stops_with_one_line_naming_a_malformed_url(name, value):
    result = run_settings(**{name: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert "Traceback" not in result.stderr


def test_production_settings_pass_check_deploy():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="x" * 20 + "production-secret-key-with-enough-entropy-0123456789",
        DJANGO_ALLOWED_HOSTS="cube.example.com",
        CUBEAI_TOKEN_PEPPERS="p1:" + "y" * 40,
        DJANGO_SETTINGS_MODULE="cubeai.settings",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off():
    result = run_settings(DJANGO_DEBUG="false")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr.strip().splitlines()[-1]


LOCK_UPGRADE = """
import sqlite3, threading, time
import django
django.setup()
from django.conf import settings
from django.db import connection, transaction
path = str(settings.DATABASES["default"]["NAME"])
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE t (n INTEGER)")
has_read = threading.Event()
def other_process():
    has_read.wait(5)
    other = sqlite3.connect(path, timeout=20)
    other.execute("INSERT INTO t VALUES (2)")
    other.commit()
writer = threading.Thread(target=other_process)
writer.start()
with transaction.atomic(), connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM t")
    has_read.set()
    time.sleep(0.3)  # the other writer commits meanwhile, or waits for us
    cursor.execute("INSERT INTO t VALUES (1)")
writer.join()
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM t")
    print(cursor.fetchone()[0])
"""


def test_a_sqlite_transaction_that_reads_then_writes_survives_a_concurrent_writer(tmp_path):
    # Deferred, the insert failed at once with "database is locked": the transaction's
    # snapshot was older than the other writer's commit.
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    clean.update(DJANGO_SETTINGS_MODULE="cubeai.settings", CUBEAI_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", LOCK_UPGRADE], cwd=ROOT, env=clean, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "2"


def test_it_refuses_a_visibility_timeout_not_longer_than_a_job_and_its_longest_back_off():
    # Redis redelivers a task unacknowledged past the visibility timeout: one shorter than a
    # job's time limit plus its longest retry back-off (300 s) would run a job twice at once.
    limits = {"REDIS_URL": "redis://127.0.0.1:6379/0"}
    limits["CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS"] = "100"
    for too_short in ("399", "400"):
        result = run_settings(**limits, CUBEAI_CELERY_VISIBILITY_TIMEOUT=too_short)
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [
            "CUBEAI_CELERY_VISIBILITY_TIMEOUT must exceed CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS"
            " + 300 s (the longest retry back-off)."
        ]
    result = run_settings(**limits, CUBEAI_CELERY_VISIBILITY_TIMEOUT="401")
    assert result.returncode == 0, result.stderr
    # The embedded broker has no visibility timeout: nothing to check there.
    assert run_settings(CUBEAI_CELERY_VISIBILITY_TIMEOUT="1").returncode == 0
