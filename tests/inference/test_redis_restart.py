"""Redis restarted under load: a gateway on a Redis server of its own (never the shared
one) keeps serving while it is away (the cache degrades to the database, the limiter follows
the domain's failure mode, open by default), goes on once it is back without a restart of
its own, and writes the usage of every request it served.

(PostgreSQL's restart: tests/inference/test_postgres_restart.py, on a server of its own.)
"""

import shutil
import subprocess
import threading
import time
import uuid

import httpx
import pytest

from inference.models import UsageEvent
from tests.conftest import _stop
from tests.inference.conftest import committed, free_port, start_gateway

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed"),
]


def start_redis(port: int, tmp) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import redis

            if redis.Redis(port=port).ping():
                return process
        except Exception:
            time.sleep(0.1)
    raise AssertionError("redis-server did not start")


def test_a_redis_restart_is_a_clean_503_then_full_recovery(stack, django_db_blocker, tmp_path):
    port = free_port()
    redis_server = start_redis(port, tmp_path)
    with django_db_blocker.unblock():
        gateway, url = start_gateway(tmp_path, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    prefix = f"req-redis-{uuid.uuid4().hex[:8]}"
    results: list[tuple[float, int, dict, str]] = []
    stop = threading.Event()

    def load() -> None:
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=30) as client:
            n = 0
            while not stop.is_set():
                n += 1
                request_id = f"{prefix}-{threading.get_ident()}-{n}"
                headers = {
                    "Authorization": f"Bearer {stack.alice_token}",
                    "x-request-id": request_id,
                }
                response = client.post(
                    f"{url}/proxy/{stack.alpha.pk}/v1/chat/completions", json=body, headers=headers
                )
                results.append(
                    (
                        time.monotonic(),
                        response.status_code,
                        response.json(),
                        response.headers.get("retry-after", ""),
                    )
                )
                time.sleep(0.02)

    threads = [threading.Thread(target=load) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        redis_server.kill()  # away, without a goodbye
        redis_server.wait()
        time.sleep(3)
        redis_server = start_redis(port, tmp_path)
        back = time.monotonic()
        time.sleep(5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=40)
        _stop(gateway)
        if redis_server.poll() is None:
            _stop(redis_server)

    # Served throughout: the cache's misses go to the database and the domain's limits fail
    # open (its default mode) onto each process's memory; never a 500, never a 503.
    others = [(status, body) for _, status, body, _ in results if status != 200]
    assert not others, others[:3]
    assert any(back - 3 < at < back for at, _, _, _ in results), "no request while Redis was away"
    served = sum(1 for _, status, _, _ in results if status == 200)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        written = committed(
            lambda: UsageEvent.objects.filter(request_id__startswith=prefix, status=200).count()
        )
        if written >= served:
            break
        time.sleep(0.3)
    assert written == served
