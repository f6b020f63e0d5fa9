"""PostgreSQL restarted under load: a gateway on a PostgreSQL server of its own (never the
shared one; `initdb` and `pg_ctl` from the machine's PostgreSQL) is killed mid-load
(`pg_ctl stop -m immediate`, no goodbye to its clients) and started again. Meanwhile the
OpenAI API serves what needs no database (a token its one-second authentication cache still
holds, the routing snapshot in memory, limits in Redis) and buffers its usage, and answers
the rest with a clean 503 and `Retry-After`, as does the management API, which needs the
database. Once the server is back both APIs serve
again without a restart of the platform, and every served request's usage row (the audit
log's per-request record) is written.

Runs on the PostgreSQL + Redis leg only: it needs the PostgreSQL server binaries, and takes
about half a minute (migrating the new server).
"""

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import _stop
from tests.inference.conftest import free_port, start_gateway

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db,
    pytest.mark.skipif(
        not settings.REDIS_URL or connection.vendor != "postgresql",
        reason="needs the PostgreSQL + Redis leg (DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.skipif(
        not (shutil.which("initdb") and shutil.which("pg_ctl")),
        reason="the PostgreSQL server binaries (initdb, pg_ctl) are not installed",
    ),
]


class PrivateServer:
    """A throwaway PostgreSQL cluster on a free port. The server refuses to run as root,
    so as root it runs as the `postgres` user."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cubeai-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, *argv: str) -> None:
        subprocess.run(
            [*self.as_user, *argv], check=True, capture_output=True, timeout=120, cwd=self.root
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def kill(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def server():
    private = PrivateServer()
    private.start()
    yield private
    private.remove()


def prepare(env: dict[str, str], upstream: str, tmp: Path) -> tuple[str, str]:
    """Migrate the new server, create a domain with a token, register the fake upstream."""

    def manage(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *argv],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    manage("migrate", "--noinput", "--verbosity", "0")
    demo = json.loads(manage("bootstrap_demo", "--force", "--json").strip().splitlines()[-1])
    registry = tmp / "backends.yaml"
    registry.write_text(
        "backends:\n"
        f"  - {{name: pg-fake, base_url: '{upstream}/v1', kind: openai, tee_type: none,"
        " allow_not_confidential: true}\n"
        "models:\n"
        "  - name: echo\n"
        "    tasks: [chat]\n"
        "    public: true\n"
        "    deployments:\n"
        "      - {backend: pg-fake, upstream_model: echo}\n"
    )
    manage("apply_backends", str(registry))
    return demo["domain_id"], demo["token"]


def test_a_postgres_restart_is_a_clean_503_then_full_recovery(
    server, fake_upstream_url, django_db_blocker, tmp_path
):
    private = {
        "DATABASE_URL": server.url,
        "CUBEAI_TEST_DATABASE_NAME": "postgres",
        "CUBEAI_DATA_DIR": str(tmp_path / "data"),
    }
    # Development mode explicitly (manage.py has no default), whatever the shell has.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cubeai.settings", "DJANGO_DEBUG": "true"}
    env.update(private)
    domain_id, token = prepare(env, fake_upstream_url, tmp_path)
    with django_db_blocker.unblock():
        gateway, url = start_gateway(tmp_path, **private)
    auth = {"Authorization": f"Bearer {token}"}
    prefix = f"req-pg-{uuid.uuid4().hex[:8]}"
    chats: list[tuple[float, int, dict, str]] = []
    management: list[tuple[float, int, dict, str]] = []
    stop = threading.Event()

    def load(answers, send) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not stop.is_set():
                n += 1
                response = send(client, f"{prefix}-{threading.get_ident()}-{n}")
                answers.append(
                    (time.monotonic(), response.status_code, response.json(),
                     response.headers.get("retry-after", ""))
                )  # fmt: skip
                time.sleep(0.02)

    def chat(client, request_id):
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        headers = {**auth, "x-request-id": request_id}
        return client.post(
            f"{url}/proxy/{domain_id}/v1/chat/completions", json=body, headers=headers
        )

    def domain(client, request_id):
        return client.get(f"{url}/api/domains/{domain_id}/", headers=auth)

    threads = [threading.Thread(target=load, args=(chats, chat)) for _ in range(2)]
    threads.append(threading.Thread(target=load, args=(management, domain)))
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        server.kill()
        away = time.monotonic()
        time.sleep(4)
        # The server accepts connections a little before `pg_ctl start -w` has seen it ready
        # and returned: "while away" ends when the start begins, "back" when it has returned.
        starting = time.monotonic()
        server.start()
        back = time.monotonic()
        time.sleep(6)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=40)
        _stop(gateway)

    # The OpenAI API: served throughout, or a clean 503 to retry; never a 500.
    for _, status, body, retry in chats:
        assert status == 200 or (
            status == 503 and body["error"]["code"] == "service_unavailable" and retry == "2"
        ), (status, body)
    assert any(away < at < starting for at, _, _, _ in chats), "no answer while away"
    # The management API needs the database: a 503 with Retry-After while it is away.
    during = [answer for answer in management if away + 0.5 < answer[0] < starting]
    assert during
    for at, status, body, retry in during:
        assert (status, body.get("code"), retry) == (503, "service_unavailable", "2"), (
            f"{at - away:.2f} s after the kill, {at - starting:.2f} s after the start began",
            status,
            body,
        )
    assert all(s in (200, 503) for _, s, _, _ in management)
    # Recovered without a restart: everything after the first seconds back is served.
    after = [s for at, s, _, _ in chats + management if at > back + 3]
    assert after and set(after) == {200}, sorted(set(after))

    # Every served request's usage row is written, none twice.
    served = sum(1 for _, status, _, _ in chats if status == 200)
    query = "SELECT count(*) FROM inference_usageevent WHERE request_id LIKE %s AND status = 200"
    deadline = time.monotonic() + 10
    with psycopg.connect(server.url.replace("postgres://", "postgresql://")) as db:
        while True:
            written = db.execute(query, (f"{prefix}-%",)).fetchone()[0]
            if written >= served or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert written == served
