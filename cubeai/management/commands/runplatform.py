"""Run every process of the embedded default in the foreground; Ctrl-C stops them all."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from agent import credentials as agent_credentials
from inference import credentials, health
from inference.attestation import selectors as attestation_selectors
from inference.attestation import services as attestation_services
from inference.models import AttestationRecord, Backend

LOCAL_BACKENDS = Path(settings.BASE_DIR) / "deploy" / "local-agent.yaml"
LOCAL_AGENT = "local-agent"


class Command(BaseCommand):
    help = "Bootstrap the demo, then run web, Celery worker (with beat) and the local agent."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--agent-port", type=int, default=8100)
        parser.add_argument("--no-agent", action="store_true", help="Do not start the agent.")

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError(
                "runplatform runs the development stack: set DJANGO_DEBUG=true (make run does)."
            )
        out = StringIO()
        call_command("bootstrap_demo", json=True, stdout=out)
        demo = json.loads(out.getvalue())
        # Every process gets development mode explicitly, whatever the shell has.
        env = {**os.environ, "DJANGO_DEBUG": "true"}
        # Prometheus' multiprocess mode: every uvicorn worker and the Celery worker write
        # their samples here, and /metrics adds them up; emptied at each start.
        metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or settings.DATA_DIR / "metrics")
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        if LOCAL_BACKENDS.exists() and not options["no_agent"]:
            call_command("apply_backends", str(LOCAL_BACKENDS), stdout=StringIO())
            # The file names the agent's default port; route to the port this agent takes.
            Backend.objects.filter(name=LOCAL_AGENT).update(
                base_url=f"http://127.0.0.1:{options['agent_port']}/v1"
            )
            env.update(self._wire_agent_credential(options["agent_port"]))
        self._print_welcome(demo, options)
        python = sys.executable
        processes = {
            "web": [
                python, "-m", "uvicorn", "cubeai.asgi:application",
                "--host", options["host"], "--port", str(options["port"]),
                "--workers", str(options["web_workers"]), "--no-server-header",
                "--loop", "uvloop", "--http", "cubeai.server:HttpToolsProtocol",
            ],
            "worker": [
                python, "-m", "celery", "-A", "cubeai", "worker", "--beat",
                "--loglevel", "INFO", "--concurrency", "2",
            ],
        }  # fmt: skip
        if not options["no_agent"]:
            processes["agent"] = [python, "-m", "agent"]
        if "agent" in processes:
            threading.Thread(
                target=self._attest_when_up, args=(options["agent_port"],), daemon=True
            ).start()
        self._supervise(processes, env)

    def _wire_agent_credential(self, port: int) -> dict[str, str]:
        """Give the local agent the credential the platform holds for it (apply_backends
        generated it on the first run), and the key that signs the ones it may be sent later
        (`manage.py rotate_credential local-agent`). Returns the agent's environment."""
        backend = Backend.objects.get(name=LOCAL_AGENT)
        path = Path(settings.DATA_DIR) / "agent" / "credentials.json"
        agent_credentials.write_file(
            path,
            [
                agent_credentials.Entry(
                    sha256=agent_credentials.digest(credentials.backend_credential(backend)),
                    version=backend.credential_version,
                )
            ],
        )
        return {
            "CUBEAI_AGENT_PORT": str(port),
            "CUBEAI_AGENT_CREDENTIALS_FILE": str(path),
            "CUBEAI_AGENT_PLATFORM_KEY": credentials.provisioning_public_key(),
        }

    def _attest_when_up(self, port: int) -> None:
        """Once the local agent serves, record it healthy and challenge it, rather than wait
        for the periodic jobs (which may have found it still loading its models)."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        else:
            return
        health.backends_check_health()
        backend = attestation_selectors.attestable_backends().filter(name=LOCAL_AGENT).first()
        if backend is not None:
            record = attestation_services.backend_attest(
                backend=backend, trigger=AttestationRecord.Trigger.ON_DEMAND
            )
            outcome = "not confidential, as declared" if record.ok else "FAILED"
            self.stdout.write(f"local agent attestation: {outcome}")

    def _print_welcome(self, demo: dict, options: dict) -> None:
        base = f"http://{options['host']}:{options['port']}"
        api = f"{base}/proxy/{demo['domain_id']}/v1"
        password = demo.get("admin_password") or "(unchanged; reset with bootstrap_demo --password)"
        self.stdout.write(
            f"""
Cube AI is starting on {base}

Sign in:   {base}/signin/   as {demo["admin_email"]} / {password}
API base:  {api}
Token:     {demo["token"]}

curl:
  curl {api}/chat/completions \\
    -H "Authorization: Bearer {demo["token"]}" -H "Content-Type: application/json" \\
    -d '{{"model": "smollm2-135m-instruct", "messages": [{{"role": "user", "content": "Say hello in French."}}]}}'

openai (Python):
  from openai import OpenAI
  client = OpenAI(base_url="{api}", api_key="{demo["token"]}")
  print(client.chat.completions.create(model="smollm2-135m-instruct",
        messages=[{{"role": "user", "content": "Say hello in French."}}]).choices[0].message.content)

Press Ctrl-C to stop every process.
"""
        )

    def _supervise(self, commands: dict[str, list[str]], env: dict) -> None:
        children = {
            name: subprocess.Popen(command, env=env)  # noqa: S603 -- our own fixed commands.
            for name, command in commands.items()
        }
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with {child.returncode}; stopping the rest.")
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.2)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(exit_code)
