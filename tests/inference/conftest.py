"""End-to-end fixtures: the real agent, a fault-injecting fake upstream and the real gateway.

Data for these tests is created once per module and committed (the gateway is another
process), then deleted at the end of the module. The gateway runs with production's settings,
so it routes rows written while it runs within the routing delay: fixtures and tests wait for
them (`eventually`, `routed`, `Stack.routed`).
"""

import datetime
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from domains import permissions, services
from domains.models import Domain, Membership, Role, User
from inference import credentials
from inference.models import Backend, Deployment, Model, ModelAccess
from tests.agent.credentials import AGENT_CREDENTIAL, credentials_file
from tests.conftest import _stop, _subprocess_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def retry_locked(function):
    """`function()`, tried again while SQLite says another writer holds the lock. The
    servers begin their transactions IMMEDIATE (cubeai/settings.py); the test process cannot
    (each test is one transaction), so a test's own short transaction that reads, then
    writes, fails at once if a server wrote meanwhile."""
    for attempt in range(10):
        try:
            return function()
        except OperationalError as error:
            if attempt == 9 or "locked" not in str(error):
                raise
            time.sleep(0.2)


def committed(function):
    """Run `function` on a connection of its own, in autocommit: it sees what the gateway
    committed since, and what it writes is committed at once (the test's own connection is
    inside the test's transaction, and on SQLite a write there would lock the gateway out)."""

    def run():
        try:
            return function()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def usage_rows(request_id: str, count: int = 1) -> list[dict]:
    """The usage rows of a request as stored, once there are `count` of them (the gateway
    writes them in batches off the request path); what there is after 10 s otherwise."""
    from inference.models import UsageEvent

    deadline = time.monotonic() + 10
    while True:
        found = committed(lambda: list(UsageEvent.objects.filter(request_id=request_id).values()))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def usage_row(request_id: str) -> dict:
    """The usage row of a request itself (a guard model's call, recorded under the same
    request id as `guardrails.classify`, is not it)."""
    deadline = time.monotonic() + 10
    while True:
        found = [r for r in usage_rows(request_id) if r["endpoint"] != "guardrails.classify"]
        if found or time.monotonic() > deadline:
            assert found, f"no usage event for {request_id}"
            return found[0]
        time.sleep(0.1)


def usage_written(stack: "Stack") -> None:
    """Wait until the gateway has written the usage of every request sent so far. It writes
    in the order it served, so once one more request's row is there, all earlier ones are."""
    marker = f"req-marker-{uuid.uuid4().hex[:12]}"
    stack.client(stack.alice_token).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "marker"}],
        extra_headers={"x-request-id": marker},
    )
    usage_row(marker)


def metering_writers(pid: int) -> list[int]:
    """The metering writers (inference/metering_writer.py) among a web process's children,
    whichever of its threads started them."""
    found = []
    children = " ".join(path.read_text() for path in Path(f"/proc/{pid}/task").glob("*/children"))
    for child in children.split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"inference.metering_writer" in cmdline:
            found.append(int(child))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(command, *, env, ready_url, log_path: Path, timeout: float = 120):
    """Start a process and wait until `ready_url` answers 200."""
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"{command[:3]} did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def agent_url(tmp_path_factory):
    """The real agent (`python -m agent`) with its real CPU models; it accepts only
    `AGENT_CREDENTIAL`, which the backend rows pointing at it must hold."""
    port = free_port()
    tmp = tmp_path_factory.mktemp("agent")
    env = {
        **os.environ,
        "CUBEAI_AGENT_PORT": str(port),
        "CUBEAI_AGENT_CACHE_DIR": str(tmp / "cache"),
        "CUBEAI_AGENT_ATTESTATION": "none",
        "CUBEAI_AGENT_CREDENTIALS_FILE": str(credentials_file(tmp)),
    }
    process = start_process(
        [sys.executable, "-m", "agent"],
        env=env,
        ready_url=f"http://127.0.0.1:{port}/health",
        log_path=tmp / "agent.log",
        timeout=180,
    )
    yield f"http://127.0.0.1:{port}"
    _stop(process)


@pytest.fixture(scope="session")
def fake_upstream_url(tmp_path_factory):
    port = free_port()
    tmp = tmp_path_factory.mktemp("fake")
    process = start_process(
        [sys.executable, str(HERE / "fake_upstream.py"), str(port)],
        env=dict(os.environ),
        ready_url=f"http://127.0.0.1:{port}/stats",
        log_path=tmp / "fake.log",
    )
    yield f"http://127.0.0.1:{port}"
    _stop(process)


# The test gateways' upload limit: small, so that over-size uploads are quick to send.
GATEWAY_MAX_AUDIO_BYTES = 1024 * 1024


# Every gateway the tests start runs with production's routing refresh, caches and breaker
# cool-down (the project's standard: end-to-end suites run with production settings). A row a
# test writes while a gateway runs is therefore seen late, as in production, and the test
# waits for it within the documented delay (`eventually`) or writes it before the gateway
# reads it. These variables are never inherited from the shell that runs the tests.
PRODUCTION_SETTINGS = (
    "CUBEAI_ROUTING_REFRESH_SECONDS",
    "CUBEAI_AUTH_CACHE_SECONDS",
    "CUBEAI_TOKEN_CACHE_SECONDS",
    "CUBEAI_BREAKER_COOLDOWN_SECONDS",
)
# The documented delays: a revocation (or a membership, role or token change) within the auth
# cache plus the token cache (1 s each); a registry or policy change within the routing check
# period (2 s) plus its rebuild. The slack is for a machine loaded by other test runs.
REVOCATION_DELAY = 1 + 1
ROUTING_DELAY = 2
SLACK = 1.5


def eventually(check, timeout: float = ROUTING_DELAY + SLACK, interval: float = 0.1):
    """`check()`'s value once it passes (returns without a failed assertion or
    `pytest.raises`), tried again every `interval` seconds; once `timeout` has passed, its
    last failure is raised. For what a gateway sees only after a documented delay: give that
    delay plus `SLACK`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, pytest.fail.Exception):
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def models_listed(base_url: str, token: str) -> set[str]:
    """The ids of the models the gateway lists at `base_url` (a `/proxy/<domain>/v1` URL)."""
    response = httpx.get(
        f"{base_url}/models", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {model["id"] for model in response.json()["data"]}


def routed(base_url: str, token: str, present=(), absent=()) -> None:
    """Wait until the gateway lists the models `present`, and not those `absent`, at
    `base_url` to `token`: a gateway already running routes rows written since its last
    snapshot within the routing delay."""

    def check() -> None:
        listed = models_listed(base_url, token)
        assert set(present) <= listed and not set(absent) & listed, sorted(listed)

    eventually(check)


def start_gateway(tmp: Path, **settings: str):
    """The real gateway (uvicorn, one worker) on the test database, with production's routing
    refresh and caches."""
    port = free_port()
    env = _subprocess_env(
        **{
            "DJANGO_DEBUG": "true",
            "CUBEAI_MAX_AUDIO_BYTES": str(GATEWAY_MAX_AUDIO_BYTES),
            "CUBEAI_USAGE_FLUSH_SECONDS": "0.2",
            **settings,
        }
    )
    for name in PRODUCTION_SETTINGS:
        if name not in settings:
            env.pop(name, None)  # production's default, not an inherited variable
    command = [sys.executable, "-m", "uvicorn", "cubeai.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning"]
    command += ["--http", "cubeai.server:HttpToolsProtocol"]
    process = start_process(
        command, env=env, ready_url=f"http://127.0.0.1:{port}/healthz", log_path=tmp / "web.log"
    )
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def gateway_url(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        process, url = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield url
    _stop(process)


@pytest.fixture(scope="session")
def fault_gateway_url(django_db_setup, django_db_blocker, tmp_path_factory):
    """A second gateway with short upstream timeouts, for the slow-upstream faults."""
    with django_db_blocker.unblock():
        process, url = start_gateway(
            tmp_path_factory.mktemp("fault-gateway"),
            CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT="1.5",
            CUBEAI_UPSTREAM_TOTAL_TIMEOUT="3",
        )
    yield url
    _stop(process)


@dataclass
class Stack:
    """The committed cast of the end-to-end tests."""

    gateway: str
    alpha: Domain
    beta: Domain
    alice_token: str
    bob_token: str
    charlie_token: str
    fake: str

    def base_url(self, domain: Domain) -> str:
        return f"{self.gateway}/proxy/{domain.pk}/v1"

    def client(self, token: str, domain: Domain | None = None, gateway: str = "", **options):
        import openai

        base_url = self.base_url(domain or self.alpha)
        if gateway:
            base_url = base_url.replace(self.gateway, gateway)
        return openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, **options)

    def routed(self, gateway: str = "") -> "Stack":
        """Wait until `gateway` (the main one by default) routes this cast: one that served
        an earlier module's cast keeps that snapshot up to the routing delay. Beta's rule
        against the chat model is the cast's last registry write; "cut" its last model."""
        base_url = self.base_url(self.beta)
        if gateway:
            base_url = base_url.replace(self.gateway, gateway)
        routed(base_url, self.charlie_token, present=["cut"], absent=["smollm2-135m-instruct"])
        return self


def _token(owner: User, scopes, domains=None) -> str:
    from tokens import services as token_services

    return retry_locked(
        lambda: token_services.token_issue(
            owner=owner,
            name="e2e",
            scopes=sorted(scopes),
            domains=domains,
            expires_at=timezone.now() + datetime.timedelta(days=1),
        )[1]
    )


def real_agent_backend(name: str, agent_url: str) -> Backend:
    """A backend row for the real agent of `agent_url`, holding the credential it accepts."""
    backend = Backend.objects.create(
        name=name, base_url=f"{agent_url}/v1", kind="agent", allow_not_confidential=True
    )
    return credentials.backend_credential_set(backend=backend, credential=AGENT_CREDENTIAL)


def build_stack(gateway: str, agent: str, fake: str) -> Stack:
    alice = User.objects.create_user("e2e-alice@example.com", "pw-alice-123456")
    bob = User.objects.create_user("e2e-bob@example.com", "pw-bob-123456")
    charlie = User.objects.create_user("e2e-charlie@example.com", "pw-charlie-123456")
    alpha = services.domain_create(creator=alice, name="Alpha", route="e2e-alpha")
    beta = services.domain_create(creator=charlie, name="Beta", route="e2e-beta")
    reader = Role.objects.create(
        domain=alpha, name="reader", permissions=[permissions.MODELS_READ, permissions.EMBEDDINGS]
    )
    Membership.objects.create(user=bob, domain=alpha, role=reader)
    everything = permissions.ALL
    agent_backend = real_agent_backend("e2e-agent", agent)

    def fake_backend(name: str) -> Backend:
        # One backend row per behaviour, so one fault's circuit breaker spares the others.
        return Backend.objects.create(
            name=f"e2e-{name}", base_url=f"{fake}/v1", kind="openai", allow_not_confidential=True
        )

    dead = Backend.objects.create(
        name="e2e-dead",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        kind="openai",
        allow_not_confidential=True,
    )

    def model(name, tasks, deployments, **fields):
        row = Model.objects.create(name=name, tasks=tasks, **fields)
        for backend, upstream in deployments:
            Deployment.objects.create(model=row, backend=backend, upstream_model=upstream)
        return row

    smol = model(
        "smollm2-135m-instruct",
        ["chat", "completion"],
        [(agent_backend, "smollm2-135m-instruct")],
        capabilities=["response_format"],
    )
    model("all-minilm-l6-v2", ["embedding"], [(agent_backend, "all-minilm-l6-v2")])
    model("whisper-tiny.en", ["transcription"], [(agent_backend, "whisper-tiny.en")])
    model("whisper-base", ["transcription", "translation"], [(agent_backend, "whisper-base")])
    healthy = fake_backend("fake-ok")
    model("paced", ["chat"], [(healthy, "paced")])
    model("slow-stream", ["chat"], [(healthy, "slow-stream")])
    model("echo", ["chat"], [(healthy, "echo")])
    model("flaky", ["chat"], [(dead, "ok"), (healthy, "ok")])
    model("overloaded", ["chat"], [(fake_backend("fake-503"), "fault-503"), (healthy, "ok")])
    model("slow-first", ["chat"], [(fake_backend("fake-slow"), "fault-slow"), (healthy, "ok")])
    model("broken", ["chat"], [(fake_backend("fake-500"), "fault-500")])
    model("cut", ["chat"], [(fake_backend("fake-cut"), "fault-cut")])
    # Beta may not use the chat model: the same name is a 404 there.
    ModelAccess.objects.create(domain=beta, model=smol, allowed=False)
    return Stack(
        gateway=gateway,
        alpha=alpha,
        beta=beta,
        alice_token=_token(alice, everything),
        bob_token=_token(bob, [permissions.MODELS_READ, permissions.EMBEDDINGS]),
        charlie_token=_token(charlie, everything),
        fake=fake,
    )


@pytest.fixture(scope="module")
def stack(django_db_blocker, gateway_url, agent_url, fake_upstream_url):
    with django_db_blocker.unblock():
        built = build_stack(gateway_url, agent_url, fake_upstream_url)
    yield built.routed()

    def remove() -> None:
        with transaction.atomic():
            User.objects.filter(email__startswith="e2e-").delete()
            Domain.objects.filter(route__startswith="e2e-").delete()
            Backend.objects.filter(name__startswith="e2e-").delete()
            Model.objects.all().delete()

    with django_db_blocker.unblock():
        # The gateways' metering writers may still write the last requests' usage meanwhile:
        # a row inserted after the cascade collected its rows fails the commit, and a write
        # between this transaction's reads and its first write makes SQLite refuse it as
        # locked. Either way the next try takes it; the writers are done within seconds.
        deadline = time.monotonic() + 30
        while True:
            try:
                retry_locked(remove)
                break
            except (IntegrityError, OperationalError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """`speech(text, voice="en")` makes a 16 kHz mono WAV with espeak-ng and sox."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are not installed (.ci/run installs them)")
    tmp = tmp_path_factory.mktemp("speech")

    def make(text: str, voice: str = "en") -> Path:
        raw, wav = tmp / f"{voice}-raw.wav", tmp / f"{voice}-{abs(hash(text))}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True
        )
        return wav

    return make
