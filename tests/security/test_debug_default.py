"""Debug pages in production (finding: DJANGO_DEBUG defaulted to on, so a node that forgot
the variable served Django's debug 404, which lists every URL pattern)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; django.setup(); from django.conf import settings;"
    "from django.test import Client;"
    "r = Client().get('/no-such-page/', HTTP_HOST='cube.example.com', secure=True);"
    "print(json.dumps({'debug': settings.DEBUG, 'status': r.status_code,"
    " 'body': r.content.decode()}))"
)


def test_a_node_without_django_debug_serves_no_debug_pages():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_DEBUG", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="cubeai.settings",
        DJANGO_SECRET_KEY="production-secret-key-" + "z" * 40,
        DJANGO_ALLOWED_HOSTS="cube.example.com",
        CUBEAI_TOKEN_PEPPERS="p1:" + "y" * 40,
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["debug"] is False
    assert answer["status"] == 404
    assert "URLconf" not in answer["body"] and "proxy/" not in answer["body"]


def test_without_debug_nothing_starts_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")}
    env["DJANGO_SETTINGS_MODULE"] = "cubeai.settings"
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_the_development_stack_refuses_to_run_without_debug(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=true"):
        call_command("runplatform", "--no-agent")


def manage_check(tmp_path, **extra) -> subprocess.CompletedProcess:
    """`manage.py check` in a fresh process with neither DJANGO_DEBUG nor a secret key."""
    drop = ("DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE", "DJANGO_SETTINGS_MODULE")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (*drop, "DATABASE_URL", "REDIS_URL", "CUBEAI_TOKEN_PEPPERS")
    }
    env.update(CUBEAI_DATA_DIR=str(tmp_path), **extra)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_py_is_in_production_mode_unless_django_debug_is_set(tmp_path):
    result = manage_check(tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set when DEBUG is off "
        "(for development, set DJANGO_DEBUG=true)."
    )
    assert "System check identified no issues" not in result.stdout


def test_manage_py_runs_in_development_mode_when_asked(tmp_path):
    result = manage_check(tmp_path, DJANGO_DEBUG="true")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
