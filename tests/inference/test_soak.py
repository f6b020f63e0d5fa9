"""Soak and fault suite: a bounded mixed load on the real gateway with production settings.

Chat (streamed and not), completions, embeddings, transcriptions (a small WAV made here, to
the fake upstream: the real agent's whisper is too slow for a short run on 2 cores), client
errors and clients that leave mid-stream, from several threads for `SOAK_SECONDS` (20 s in
CI; `make soak` runs 300 s), while one backend of a two-deployment model is killed a third
of the way in. Counted, not assumed: no 5xx, no request past its timeout, the worker's RSS
bounded, its open file descriptors (sockets) back to where they were, its event loop's tasks
back to where they were (`cubeai_event_loop_tasks` on `/metrics`), every upstream stream
the gateway opened finished or cancelled (none held), and its metering writer the same
process throughout, its RSS bounded and its descriptors as they were.

Slow and stalled clients are the second test here; Redis and PostgreSQL restarts have suites
of their own (`test_redis_restart.py`, `test_postgres_restart.py`), which `make soak` runs too.
"""

import os
import random
import signal
import sys
import threading
import time
import uuid
import wave
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from inference.models import Backend, Model
from tests.conftest import _stop
from tests.inference.conftest import (
    HERE,
    committed,
    free_port,
    metering_writers,
    start_gateway,
    start_process,
    usage_row,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
METRICS_TOKEN = "soak-metrics-token-0123456789"
THREADS = 6
TIMEOUT = 30  # the client's; no request may come near it


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def client_connections(pid: int, port: int) -> int:
    """The worker's open TCP connections on its listening port (clients it still holds)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != "0A" and fields[9] in inodes:
                held += 1
    return held


def fd_kinds(pid: int, names: dict[int | str, str]) -> dict[str, int]:
    """The worker's open descriptors by kind: TCP sockets by the server they reach (`names`
    maps a remote port to a name; a port it lacks is a client of the worker), the SQLite
    database's files as `names` maps its path, anything else by what it is (a file's path,
    pipe, anon_inode...)."""
    peers = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[2].rsplit(":", 1)[1], 16)
            peers[fields[9]] = names.get(port, "listening" if fields[3] == "0A" else "client")
    kinds: dict[str, int] = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            target = peers.get(target[8:-1], "socket")
        elif ":" in target:
            target = target.split(":", 1)[0]
        else:
            target = names.get(target.removesuffix("-wal").removesuffix("-shm"), target)
        kinds[target] = kinds.get(target, 0) + 1
    return kinds


def server_ports(stack, soak) -> dict[int | str, str]:
    """Names of the servers the worker reaches, by port (or, for SQLite, the file's path)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    ports: dict[int | str, str] = {
        int(database.get("PORT") or 0): "database",
        str(database["NAME"]): "database",
        httpx.URL(stack.fake).port: "upstream",
        soak["doomed_port"]: "doomed",
    }
    if settings.REDIS_URL:
        ports[httpx.URL(settings.REDIS_URL).port or 6379] = "redis"
    return ports


def pool_ceilings() -> dict[str, int]:
    """The most connections the worker may hold to each server it uses. The pools grow with
    the concurrency they meet and stop at their bound: Redis has two clients (the cache, the
    limiter), each bounded; the database one connection per off-path thread (for SQLite,
    three files each: the database, its WAL and its shared memory); an upstream
    one connection per request in flight and one for its prompt count (the load's threads
    set that concurrency; the configured bound is production's)."""
    from django.conf import settings

    from inference.offpath import SIZES

    return {
        "redis": 2 * settings.CUBEAI_REDIS_MAX_CONNECTIONS,
        "database": (sum(SIZES.values()) + 1) * (1 if settings.DATABASE_URL else 3),
        "upstream": 2 * THREADS,
        "doomed": 2 * THREADS,
    }


@pytest.fixture(scope="module")
def soak(stack, django_db_blocker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    port = free_port()
    doomed = start_process(
        [sys.executable, str(HERE / "fake_upstream.py"), str(port)],
        env=dict(os.environ),
        ready_url=f"http://127.0.0.1:{port}/stats",
        log_path=tmp / "doomed.log",
    )
    with django_db_blocker.unblock():
        gateway, url = start_gateway(
            tmp,
            CUBEAI_RATE_LIMIT_TOKEN_RPM="1000000",
            CUBEAI_RATE_LIMIT_DOMAIN_RPM="1000000",
            CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT="5",
            CUBEAI_METRICS_TOKEN=METRICS_TOKEN,
        )
        fake = Backend.objects.get(name="e2e-fake-ok")
        other = Backend.objects.create(
            name="e2e-soak-doomed",
            base_url=f"http://127.0.0.1:{port}/v1",
            kind="openai",
            allow_not_confidential=True,
        )
        for name, tasks, deployments in (
            ("soak-chat", ["chat", "completion"], [(fake, "echo")]),
            ("soak-stream", ["chat"], [(fake, "paced")]),
            ("soak-embed", ["embedding"], [(fake, "echo")]),
            ("soak-transcribe", ["transcription"], [(fake, "echo")]),
            ("soak-failover", ["chat"], [(other, "echo"), (fake, "echo")]),
        ):
            model = Model.objects.create(name=name, tasks=tasks)
            for backend, upstream in deployments:
                model.deployments.create(backend=backend, upstream_model=upstream)
    yield {"gateway": gateway, "url": url, "doomed": doomed, "doomed_port": port}
    _stop(gateway)
    if doomed.poll() is None:
        _stop(doomed)
    with django_db_blocker.unblock():
        Model.objects.filter(name__startswith="soak-").delete()
        Backend.objects.filter(name__startswith="e2e-soak-").delete()


def tiny_wav(seconds: float = 0.25, rate: int = 16000) -> bytes:
    """A WAV of silence, 16-bit mono: what a transcription upload looks like, small."""
    buffer = BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


WAV = tiny_wav()


def one_request(client: httpx.Client, base: str, kind: str) -> int:
    if kind == "chat":
        body = {"model": "soak-chat", "messages": [{"role": "user", "content": "hi"}]}
        return client.post(f"{base}/chat/completions", json=body).status_code
    if kind == "failover":
        body = {"model": "soak-failover", "messages": [{"role": "user", "content": "hi"}]}
        return client.post(f"{base}/chat/completions", json=body).status_code
    if kind == "completion":
        body = {"model": "soak-chat", "prompt": "hi"}
        return client.post(f"{base}/completions", json=body).status_code
    if kind == "embedding":
        body = {"model": "soak-embed", "input": ["a", "b"]}
        return client.post(f"{base}/embeddings", json=body).status_code
    if kind == "transcription":
        response = client.post(
            f"{base}/audio/transcriptions",
            data={"model": "soak-transcribe"},
            files={"file": ("hi.wav", WAV, "audio/wav")},
        )
        if response.status_code == 200:
            # What the backend made of the upload: the whole WAV reached it.
            assert response.json()["text"] == f"echo:echo:{len(WAV)} bytes:0.25 s", response.text
        return response.status_code
    if kind in ("stream", "leave"):
        body = {
            "model": "soak-stream",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
        with client.stream("POST", f"{base}/chat/completions", json=body) as response:
            if kind == "leave":
                next(response.iter_raw())  # the first event, then the client goes away
                return response.status_code
            assert response.read().rstrip().endswith(b"data: [DONE]")
            return response.status_code
    if kind == "unknown-model":
        body = {"model": "soak-nope", "messages": [{"role": "user", "content": "hi"}]}
        return client.post(f"{base}/chat/completions", json=body).status_code
    body = {"model": "soak-chat", "messages": [], "surprise": 1}  # invalid
    return client.post(f"{base}/chat/completions", json=body).status_code


def loop_tasks(url: str, pid: int) -> int:
    """The tasks alive on the worker's event loop, as `/metrics` counts them at the scrape
    (`cubeai_event_loop_tasks`; its own tasks included, the same few every time)."""
    response = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith("cubeai_event_loop_tasks")
        and ("pid=" not in line or f'pid="{pid}"' in line)
    ]
    assert len(values) == 1, response.text
    return int(values[0])


# Tasks of the gateway's own that may or may not be alive at a scrape, load or not: a
# routing check (`inference/registry.py`) and a metering flush (`inference/metering.py`).
# The routing watcher is always there once the first request started it (the warm-up).
BACKGROUND_TASKS = 2


def streams_held(fake: str) -> int:
    """Streams the fake upstream started and neither finished nor saw cancelled. It serves
    the whole session, so a test compares with what was held when it began."""
    stats = httpx.get(f"{fake}/stats").json()
    return stats["streams_started"] - stats["streams_finished"] - stats["streams_cancelled"]


KINDS = [
    "chat",
    "failover",
    "completion",
    "embedding",
    "transcription",
    "stream",
    "leave",
    "unknown-model",
    "bad",
]
EXPECTED = {"unknown-model": {404}, "bad": {400}}


def test_a_mixed_load_with_a_backend_killed_leaves_nothing_behind(soak, stack):
    base = f"{soak['url']}/proxy/{stack.alpha.pk}/v1"
    headers = {"Authorization": f"Bearer {stack.alice_token}"}
    pid = soak["gateway"].pid
    fake_stats = f"{stack.fake}/stats"
    held_before = streams_held(stack.fake)
    results: list[tuple[str, int, float, float]] = []  # kind, status, seconds, began
    failures: list[str] = []
    stop = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(headers=headers, timeout=TIMEOUT) as client:
            while not stop.is_set():
                kind = rng.choice(KINDS)
                started = time.monotonic()
                try:
                    status = one_request(client, base, kind)
                except Exception as exc:  # a hang or a broken answer: counted, reported
                    failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                results.append((kind, status, time.monotonic() - started, started))

    def load(seed: int) -> list[threading.Thread]:
        stop.clear()
        threads = [threading.Thread(target=worker, args=(seed + n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        return threads

    # Warm up at the same concurrency, so the pools (upstream connections, the executors'
    # database connections) are at their working size; then the baseline.
    warm = load(1000)
    time.sleep(3)
    stop.set()
    for thread in warm:
        thread.join(timeout=TIMEOUT + 5)
    results.clear()
    time.sleep(1)
    names = server_ports(stack, soak)
    rss_before, kinds_before = rss_kib(pid), fd_kinds(pid, names)
    # The worker's metering writer, which writes its usage: the same one throughout (it
    # never died), its memory bounded and its descriptors (a database connection, its
    # input, its log) as they were.
    (writer,) = metering_writers(pid)
    writer_rss_before, writer_kinds_before = rss_kib(writer), fd_kinds(writer, names)
    tasks_before = loop_tasks(soak["url"], pid)

    threads = load(0)
    # The count sees what load puts on the loop (each request in flight has tasks of its
    # own), so its return to the baseline below means something: a few scrapes, the most.
    tasks_during = max(loop_tasks(soak["url"], pid) for _ in range(5))
    time.sleep(SOAK_SECONDS / 3)
    soak["doomed"].send_signal(signal.SIGKILL)  # a backend dies mid-load
    killed = time.monotonic()
    time.sleep(SOAK_SECONDS * 2 / 3)
    stop.set()
    for thread in threads:
        thread.join(timeout=TIMEOUT + 5)
    assert not any(thread.is_alive() for thread in threads), "a request hung"

    assert failures == []
    assert len(results) > 50, len(results)
    # No 5xx: the dead backend's requests fail over. Those it had already taken when it died
    # are a 502 (README: once a backend has the request, a broken connection is never run
    # again elsewhere), and only those: none begun after the kill.
    wrong = [
        (k, s)
        for k, s, _, began in results
        if s not in EXPECTED.get(k, {200})
        and not (k == "failover" and s == 502 and began < killed + 0.5)
    ]
    assert wrong == [], wrong[:10]
    assert max(seconds for _, _, seconds, _ in results) < 10
    assert {k for k, _, _, _ in results} == set(KINDS)

    # Settled: the gateway holds no more than it did: every upstream stream ended, no client
    # connection left, each server's connections within its pool's bound, every other
    # descriptor (files, pipes, event fds) as before; and its memory stayed bounded.
    ceilings = pool_ceilings()

    def settled(kinds: dict[str, int]) -> bool:
        pools = all(kinds.get(name, 0) <= ceiling for name, ceiling in ceilings.items())
        rest = {k: n for k, n in kinds.items() if k not in ceilings}
        return pools and rest == {k: n for k, n in kinds_before.items() if k not in ceilings}

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = httpx.get(fake_stats).json()
        held = stats["streams_started"] - stats["streams_finished"] - stats["streams_cancelled"]
        tasks_after = loop_tasks(soak["url"], pid)
        if (
            held == held_before
            and settled(fd_kinds(pid, names))
            and fd_kinds(writer, names) == writer_kinds_before
            and tasks_after <= tasks_before + BACKGROUND_TASKS
        ):
            break
        time.sleep(0.5)
    kinds_after = fd_kinds(pid, names)
    assert held == held_before, stats
    assert settled(kinds_after), (kinds_before, kinds_after, ceilings)
    # No task left on the worker's event loop: none per request, stream or client gone.
    assert tasks_during > tasks_before + BACKGROUND_TASKS, (tasks_before, tasks_during)
    assert tasks_after <= tasks_before + BACKGROUND_TASKS, (tasks_before, tasks_after)
    rss_after = rss_kib(pid)
    assert rss_after < rss_before * 1.25 + 20_000, (rss_before, rss_after)
    assert metering_writers(pid) == [writer]
    writer_kinds_after = fd_kinds(writer, names)
    assert writer_kinds_after == writer_kinds_before, (writer_kinds_before, writer_kinds_after)
    writer_rss_after = rss_kib(writer)
    assert writer_rss_after < writer_rss_before * 1.25 + 20_000, (
        writer_rss_before,
        writer_rss_after,
    )
    print(
        f"\nsoak {SOAK_SECONDS:g} s: {len(results)} requests, "
        f"RSS {rss_before // 1024}->{rss_after // 1024} MiB, "
        f"metering writer {writer_rss_before // 1024}->{writer_rss_after // 1024} MiB, "
        f"event loop tasks {tasks_before}->{tasks_during} under load->{tasks_after}, "
        f"descriptors {sorted(kinds_before.items())} -> {sorted(kinds_after.items())}"
    )
    # The usage of what was served was all written.
    marker = f"req-soak-{uuid.uuid4().hex[:12]}"
    with httpx.Client(headers={**headers, "x-request-id": marker}, timeout=TIMEOUT) as client:
        one_request(client, base, "chat")
    assert usage_row(marker)["status"] == 200
    served = sum(1 for k, s, _, _ in results if s == 200 and k not in ("leave", "stream"))
    from inference.models import UsageEvent

    written = committed(
        lambda: UsageEvent.objects.filter(
            model__in=["soak-chat", "soak-embed", "soak-transcribe", "soak-failover"],
            status=200,
        ).count()
    )
    assert written >= served, (written, served)


def test_slow_and_stalled_clients_do_not_hold_the_worker(soak, stack):
    """Slowloris (headers a byte at a time) and clients that never read their stream: other
    requests are served meanwhile, and once those clients go the worker holds nothing."""
    import socket

    host, port = soak["url"].removeprefix("http://").split(":")
    pid = soak["gateway"].pid
    base = f"{soak['url']}/proxy/{stack.alpha.pk}/v1"
    headers = {"Authorization": f"Bearer {stack.alice_token}"}
    held_before = streams_held(stack.fake)
    with httpx.Client(headers=headers, timeout=TIMEOUT) as client:
        one_request(client, base, "chat")
    slow = []
    for _ in range(20):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(f"POST /proxy/{stack.alpha.pk}/v1/chat/completions HTTP/1.1\r\n".encode())
        slow.append(sock)
    body = (
        '{"model": "soak-stream", "stream": true, "messages": [{"role": "user", "content": "x"}]}'
    )
    stalled = []
    for _ in range(10):
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.sendall(
            (
                f"POST /proxy/{stack.alpha.pk}/v1/chat/completions HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Bearer {stack.alice_token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                f"{body}"
            ).encode()
        )
        stalled.append(sock)  # never read
    try:
        with httpx.Client(headers=headers, timeout=TIMEOUT) as client:
            for second in range(5):
                for sock in slow:
                    sock.sendall(b"X")  # a header, a byte at a time
                started = time.monotonic()
                assert one_request(client, base, "chat") == 200
                assert time.monotonic() - started < 3, f"held at second {second}"
                time.sleep(1)
        # Counted where they are held: the check below would see them.
        assert client_connections(pid, int(port)) >= len(slow)
    finally:
        for sock in slow + stalled:
            sock.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and client_connections(pid, int(port)):
        time.sleep(0.5)
    assert client_connections(pid, int(port)) == 0
    assert streams_held(stack.fake) == held_before
