"""The shared test cast: alice owns a domain, bob is on it with fewer rights, charlie is not.

Charlie owns a domain of his own, so every isolation test can check both directions.
"""

import datetime

import pytest
from django.utils import timezone

from domains import permissions, services
from domains.models import Domain, Membership, User

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True, scope="session")
def _each_password_hashed_once():
    """PBKDF2 with Django's iterations costs 0.6 s a hash on this machine, and most tests make
    users: each distinct password is hashed once per session and the (real, verifiable)
    hash reused, so servers started by the tests still check it as production does."""
    from django.conf import settings
    from django.contrib.auth import base_user, hashers

    real = hashers.make_password
    hashed: dict[tuple, str] = {}

    def once(password, salt=None, hasher="default"):
        if not isinstance(password, str) or salt is not None or hasher != "default":
            return real(password, salt, hasher)
        # Per hasher in force: some suites switch to a fast one, servers never do.
        key = (password, tuple(settings.PASSWORD_HASHERS))
        if key not in hashed:
            hashed[key] = real(password)
        return hashed[key]

    base_user.make_password = once
    yield
    base_user.make_password = real


# Nothing secret in any log of the session: see tests/leaks.py.
pytest_plugins = ["tests.leaks"]


@pytest.fixture(autouse=True)
def _sqlite_writers_wait_their_turn(request):
    """In tests that commit (transaction=True) beside the servers they start, take SQLite's
    write lock when a transaction begins (IMMEDIATE). A deferred transaction that read first
    fails at once with "database is locked" if another process wrote meanwhile; an immediate
    one waits its turn. Tests wrapped in one transaction keep the default, or they would hold
    the lock for the whole test."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield
        return
    from django.db import connection

    if connection.vendor != "sqlite":
        yield
        return
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["transaction_mode"] = "IMMEDIATE"
    connection.transaction_mode = "IMMEDIATE"
    try:
        yield
    finally:
        options.pop("transaction_mode", None)
        connection.transaction_mode = None


@pytest.fixture(autouse=True)
def _metering_buffers_end_with_the_test():
    """Usage and audit events a test queued in this process and did not write are dropped
    with it: the next test's flush would write them, for a domain that no longer exists."""
    yield
    from inference import metering

    metering.drain()
    metering._audit_buffer.clear()


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice@example.com", PASSWORD, name="Alice")


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob@example.com", PASSWORD, name="Bob")


@pytest.fixture
def charlie(db) -> User:
    return User.objects.create_user("charlie@example.com", PASSWORD, name="Charlie")


@pytest.fixture
def domain(alice, bob) -> Domain:
    """Alice's domain; bob is a viewer in it."""
    domain = services.domain_create(creator=alice, name="Alice Labs", route="alice-labs")
    Membership.objects.create(
        user=bob, domain=domain, role=services.role_builtin(name=permissions.VIEWER)
    )
    return domain


@pytest.fixture
def other_domain(charlie) -> Domain:
    """Charlie's domain, which alice and bob must never see."""
    return services.domain_create(creator=charlie, name="Charlie Corp", route="charlie-corp")


@pytest.fixture
def api():
    """A management API client (`rest_framework.test.APIClient`)."""
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def pat():
    """Issue a token: `pat(owner, scopes=..., domains=...)` returns the secret string."""
    from tokens import services as token_services

    def issue(owner: User, *, scopes=None, domains=None, days: int = 30, name: str = "test"):
        _, plaintext = token_services.token_issue(
            owner=owner,
            name=name,
            scopes=list(scopes or permissions.BUILTIN_ROLES[permissions.MEMBER]),
            domains=domains,
            expires_at=timezone.now() + datetime.timedelta(days=days),
        )
        return plaintext

    return issue


# --- Real processes on the test database ----------------------------------------------------
# The worker and server fixtures below start real processes with this environment. They read
# the test database's name from CUBEAI_TEST_DATABASE_NAME (see cubeai/settings.py): on SQLite
# the test database is a file for this reason, on PostgreSQL it is `test_<name>`. Tests that
# use them need `@pytest.mark.django_db(transaction=True)`, so that what they write is
# committed and the other process sees it.


def _subprocess_env(**extra: str) -> dict[str, str]:
    import os

    from django.db import connection

    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "cubeai.settings"
    env["CUBEAI_TEST_DATABASE_NAME"] = str(connection.settings_dict["NAME"])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _stop(process) -> None:
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, tmp_path_factory):
    """A real Celery worker process (`celery -A cubeai worker --pool solo`) on the test database.

    It uses the same broker as the code under test: the filesystem broker under
    `DATA_DIR/celery` by default, Redis when REDIS_URL is set. Tasks go to a queue of this
    test session only, so concurrent test runs sharing a broker do not take each other's
    tasks. Send with `.delay()` and wait with `.get(timeout=30)`; yields the queue name.
    """
    import subprocess
    import sys
    import threading
    import time
    import uuid
    from pathlib import Path

    from django.conf import settings

    from cubeai.celery import app

    queue = f"test-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    celery = Path(sys.executable).parent / "celery"
    command = [str(celery), "-A", "cubeai", "worker", "--pool", "solo", "--concurrency", "1"]
    command += ["--queues", queue, "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    command += ["--hostname", f"{queue}@%h"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=_subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ready = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if " ready." in log_path.read_text():
                ready.set()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    watcher.join(timeout=60)
    if not ready.is_set():
        _stop(process)
        pytest.fail(f"The Celery worker did not start:\n{log_path.read_text()[-4000:]}")
    previous_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    try:
        yield queue
    finally:
        app.conf.task_default_queue = previous_queue
        _stop(process)


@pytest.fixture(scope="session")
def live_server_process(django_db_setup, tmp_path_factory):
    """The real ASGI server (uvicorn `cubeai.asgi:application`) on the test database.

    Yields its base URL, e.g. `http://127.0.0.1:54321`. It runs with DEBUG on (static files
    from the finders, cookies without `Secure`) on a free loopback port.
    """
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from django.conf import settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path_factory.mktemp("server") / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "cubeai.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning"]
    command += ["--http", "cubeai.server:HttpToolsProtocol"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=_subprocess_env(DJANGO_DEBUG="true"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"The server did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.1)
    try:
        yield url
    finally:
        _stop(process)
