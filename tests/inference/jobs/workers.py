"""Real Celery worker processes for the transcription-job tests, which kill and restart them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import _stop, _subprocess_env

ROOT = Path(__file__).resolve().parents[3]


class Worker:
    """`celery -A cubeai worker --pool solo` on the test database, reading `queue` only."""

    def __init__(self, queue: str, log_dir: Path, **env: str) -> None:
        self.queue = queue
        self.log_dir = log_dir
        self.env = env
        self.starts = 0
        self.process: subprocess.Popen | None = None

    def start(self) -> "Worker":
        self.starts += 1
        self.log_path = self.log_dir / f"worker-{self.starts}.log"
        celery = Path(sys.executable).parent / "celery"
        command = [str(celery), "-A", "cubeai", "worker", "--pool", "solo", "--concurrency", "1"]
        command += ["--queues", self.queue, "--loglevel", "INFO"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        command += ["--hostname", f"{self.queue}-{self.starts}@%h"]
        env = _subprocess_env(CUBEAI_CELERY_QUEUE=self.queue, **self.env)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while " ready." not in self.log_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task, without acknowledging or cleaning anything."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            _stop(self.process)

    def log(self) -> str:
        return self.log_path.read_text()[-6000:]
