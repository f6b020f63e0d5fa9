"""Shared fixtures for the agent tests: one in-process agent with the real models per session,
speech clips made with espeak-ng, and helpers to start ``python -m agent`` as a process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from agent.app import create_app
from agent.config import AgentConfig
from tests.agent.credentials import AUTH, credentials_file

REPO = Path(__file__).resolve().parents[2]
ESPEAK = Path("/usr/bin/espeak-ng")
SOX = Path("/usr/bin/sox")
ENGLISH_SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
GERMAN_SENTENCE = "Guten Morgen, wie geht es dir heute? Das Wetter ist sehr schön."


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agent-cache")


@pytest.fixture(scope="session")
def agent(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The agent with all four built-in models, loaded once for the whole session; the
    client presents the platform's credential."""
    # One thread per runtime: CI boxes have two cores shared with other suites, and llama.cpp's
    # thread barriers degrade badly (seconds per request) when its threads are descheduled.
    config = AgentConfig(
        attestation="none",
        cache_dir=cache_dir,
        threads=1,
        credentials_file=credentials_file(tmp_path_factory.mktemp("agent-state")),
    )
    with TestClient(create_app(config), headers=AUTH) as client:
        yield client


def make_speech(tmp: Path, name: str, text: str, *, voice: str = "en") -> Path:
    """A 16 kHz mono WAV of ``text`` spoken by espeak-ng (CI installs espeak-ng and sox)."""
    if not ESPEAK.exists() or not SOX.exists():
        pytest.skip("espeak-ng and sox are needed to synthesise test speech (apt: espeak-ng sox)")
    raw = tmp / f"{name}-raw.wav"
    out = tmp / f"{name}.wav"
    subprocess.run([str(ESPEAK), "-v", voice, "-w", str(raw), text], check=True)
    subprocess.run([str(SOX), str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def english_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech(tmp_path_factory.mktemp("speech"), "english", ENGLISH_SENTENCE)


@pytest.fixture(scope="session")
def german_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech(tmp_path_factory.mktemp("speech"), "german", GERMAN_SENTENCE, voice="de")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AgentProcess:
    """``python -m agent`` running as a real subprocess on a free port, accepting the test
    credential unless ``env`` says otherwise; its output goes to ``workdir/agent.log``."""

    def __init__(self, env: dict[str, str], *, workdir: Path, scheme: str = "http") -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = workdir / "agent.log"
        full_env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CUBEAI_AGENT_HOST": "127.0.0.1",
            "CUBEAI_AGENT_PORT": str(self.port),
            "CUBEAI_AGENT_CREDENTIALS_FILE": str(credentials_file(workdir)),
            **env,
        }
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent"],
                cwd=REPO,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60.0, **client_options: object) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log_path.read_text()
                raise AssertionError(f"agent exited with {self.process.returncode}:\n{output}")
            try:
                response = httpx.get(f"{self.url}/health", timeout=1.0, **client_options)
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("agent did not become ready in time")

    def stop(self) -> str:
        """Stop the agent; returns everything it logged."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.log_path.read_text()


@pytest.fixture(scope="session")
def agent_process(
    cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """A real agent process serving the chat and embedding models (also the relay's upstream)."""
    if shutil.which(sys.executable) is None:
        pytest.skip("no Python interpreter to start the agent with")
    process = AgentProcess(
        {
            "CUBEAI_AGENT_MODELS": "smollm2-135m-instruct,all-minilm-l6-v2",
            "CUBEAI_AGENT_ATTESTATION": "none",
            "CUBEAI_AGENT_CACHE_DIR": str(cache_dir),
            "CUBEAI_AGENT_THREADS": "1",
        },
        workdir=tmp_path_factory.mktemp("agent-process"),
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
