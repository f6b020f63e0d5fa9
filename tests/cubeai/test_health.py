"""Liveness and readiness probes."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_healthz_answers_without_auth(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_stores(client, db, settings):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"] == "ok"
    if settings.REDIS_URL:
        assert body["checks"]["redis"] == "ok"


def _readyz_in_subprocess(**env: str) -> str:
    code = (
        "import django; django.setup();"
        "from django.test import Client; r = Client().get('/readyz', HTTP_HOST='localhost');"
        "print(r.status_code, r.json()['checks'])"
    )
    full_env = {**os.environ, **env, "DJANGO_SETTINGS_MODULE": "cubeai.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_readyz_is_503_when_the_database_is_unreachable():
    # Port 9 on loopback has no server: the connection is refused at once.
    out = _readyz_in_subprocess(DATABASE_URL="postgres://postgres@127.0.0.1:9/cubeai")
    assert out.startswith("503"), out
    assert "'database': 'unavailable'" in out


def test_readyz_is_503_when_redis_is_unreachable():
    out = _readyz_in_subprocess(REDIS_URL="redis://127.0.0.1:9/0")
    assert out.startswith("503"), out
    assert "'redis': 'unavailable'" in out
