"""`make run`'s command end to end: `migrate`, then `runplatform` on ports of its own, on a
data directory that does not exist yet; a chat goes through; SIGTERM stops every process."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.models]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_runplatform_serves_on_its_own_ports_and_stops_every_process(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CUBEAI_TEST_DATABASE_NAME")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="cubeai.settings",
        # The development stack, asked for as `make run` asks: manage.py has no default.
        DJANGO_DEBUG="true",
        CUBEAI_DATA_DIR=str(tmp_path / "missing" / "var"),
        CUBEAI_AGENT_CACHE_DIR=str(tmp_path / "agent-cache"),
        PYTHONUNBUFFERED="1",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    port, agent_port = free_port(), free_port()
    # The command's own output (the welcome, with an example prompt and the demo token on
    # purpose) apart from its processes' logs, which the leak check reads (tests/leaks.py).
    out_path, log_path = tmp_path / "platform.out", tmp_path / "platform.log"
    command = [sys.executable, "manage.py", "runplatform", "--port", str(port)]
    command += ["--agent-port", str(agent_port), "--web-workers", "1"]
    with out_path.open("w") as out, log_path.open("w") as log:
        platform = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=log, start_new_session=True
        )

    def tail() -> str:
        return out_path.read_text()[-2000:] + log_path.read_text()[-4000:]

    try:
        # The local agent is challenged on the port it took, once it serves.
        deadline = time.monotonic() + 180
        while "local agent attestation:" not in out_path.read_text():
            assert platform.poll() is None, tail()
            assert time.monotonic() < deadline, tail()
            time.sleep(0.2)
        output = out_path.read_text()
        assert "local agent attestation: not confidential, as declared" in output, tail()
        base_url = re.search(r"^API base:\s+(\S+)$", output, re.MULTILINE).group(1)
        token = re.search(r"^Token:\s+(\S+)$", output, re.MULTILINE).group(1)
        assert base_url.startswith(f"http://127.0.0.1:{port}/proxy/")
        client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
        answer = client.chat.completions.create(
            model="smollm2-135m-instruct",
            # Not the welcome's example question, which the log holds on purpose.
            messages=[{"role": "user", "content": "Name the capital city of France."}],
            temperature=0,
            max_tokens=20,
        )
        assert "Paris" in answer.choices[0].message.content
    finally:
        platform.send_signal(signal.SIGTERM)
        try:
            returncode = platform.wait(timeout=30)
        finally:
            if group_alive(platform.pid):
                os.killpg(platform.pid, signal.SIGKILL)
    assert returncode == 0, tail()
    deadline = time.monotonic() + 10
    while group_alive(platform.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(platform.pid), "a process of runplatform outlived it"
