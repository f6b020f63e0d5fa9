"""What the gateway adds to a chat request, next to LiteLLM's proxy, measured in one run.

Starts on loopback: the bench upstream (bench/upstream.py, its own process), the gateway
(uvicorn, DEBUG off, a throwaway SQLite database with a demo domain, a PAT and the upstream
registered as a backend) and LiteLLM's proxy (bench/.venv-litellm, same upstream, same worker
count). The same non-streaming chat request goes to each: directly to the upstream, through
the full gateway path (PAT auth, domain and permission checks, routing, guardrails, metering)
and through LiteLLM. Reports added latency p50/p90/p99 at concurrency 1 (wrk), throughput and
errors at concurrency 64 (wrk), the added time to the last chunk of a 16-chunk stream (an
aiohttp client, sequential requests) and each web worker's RSS after warm-up and after 20,000
requests. Prints a table and writes bench/results/gateway.json. Everything it starts is
stopped at the end, on failure and on Ctrl-C too.

    .venv/bin/python bench/gateway_bench.py            # the full run (about 6 minutes)
    .venv/bin/python bench/gateway_bench.py --quick    # a smoke run (about 1 minute)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_REQUIREMENTS = BENCH / "requirements-litellm.txt"
POST_LUA = BENCH / "wrk" / "post.lua"
MODEL = "bench-model"
BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16},
    separators=(",", ":"),
)
HOST = "127.0.0.1"

TARGET_ADDED_P50_MS = 1.5
TARGET_THROUGHPUT_RATIO = 4.0
TARGET_STREAM_ADDED_MS = 3.0
TARGET_RSS_GROWTH = 0.10
# Tail (issue 17): added p99 at c=1 under 5 ms and under 1/5 of LiteLLM's added p99; at c=64,
# the p99 under 3x the p50.
TARGET_ADDED_P99_MS = 5.0
TARGET_P99_SHARE_OF_LITELLM = 0.2
TARGET_C64_TAIL_RATIO = 3.0
# The model of the bench upstream that streams prose a word at a time, a word every
# PROSE_SPACING_MS: the stream sanitizer may hold at most the last word back.
PROSE_MODEL = "bench-prose"
PROSE_SPACING_MS = 20.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Processes:
    """Every process this bench starts, each in its own process group, stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(
        self, name: str, argv: list[str], env: dict | None = None, cwd: Path = REPO
    ) -> subprocess.Popen:
        out = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.started.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen, timeout: float = 15) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Workers left behind by a master that died first share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for _name, proc in reversed(self.started):
            self.stop(proc)
        self.started.clear()


def wait_ready(check, proc: subprocess.Popen, what: str, timeout: float) -> None:
    """Poll `check()` until it returns True; bounded by `timeout` and by the process dying."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if check():
                return
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.25)
    raise RuntimeError(f"{what} was not ready within {timeout:.0f} s ({last_error})")


def http_post(url: str, body: str, auth: str | None, timeout: float = 10) -> tuple[int, dict, str]:
    """One POST with the standard library (setup and checks only, never measured)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    try:
        conn.request("POST", parts.path, body=body.encode(), headers=headers)
        response = conn.getresponse()
        return (
            response.status,
            dict(response.getheaders()),
            response.read().decode(errors="replace"),
        )
    finally:
        conn.close()


# -- load ---------------------------------------------------------------------------------


def run_wrk(url: str, auth: str | None, connections: int, seconds: float) -> dict:
    """One wrk run; returns its summary with latencies in ms and wrk's own CPU share."""
    threads = 1 if connections < 16 else 2
    env = {**os.environ, "BENCH_BODY": BODY, "BENCH_AUTH": auth or ""}
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    argv += ["--latency", "--timeout", "10s", "-s", str(POST_LUA), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-500:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    latency = {k: v / 1000 for k, v in raw["latency_us"].items()}
    return {
        "connections": connections,
        "threads": threads,
        "seconds": raw["duration_us"] / 1e6,
        "requests": raw["requests"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "errors": raw["errors"],
        "error_count": sum(raw["errors"].values()),
        "latency_ms": latency,
        "loadgen_cpu_share": cpu / wall,
    }


async def _stream_probe(url: str, auth: str | None, count: int, warmup: int) -> dict:
    import aiohttp

    body = json.loads(BODY)
    body["stream"] = True
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    times: list[float] = []
    errors = 0
    chunks_seen: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=1)
    cpu_started, wall_started = time.process_time(), time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as client:
        for i in range(warmup + count):
            started = time.perf_counter()
            events = 0
            try:
                async with client.post(url, data=payload, headers=headers) as response:
                    ok = response.status == 200
                    async for line in response.content:
                        if line.startswith(b"data:") and b'"choices":[{' in line:
                            events += 1
                    elapsed = time.perf_counter() - started
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if i < warmup:
                continue
            if not ok:
                errors += 1
                continue
            times.append(elapsed * 1000)
            chunks_seen[events] += 1
    wall = time.monotonic() - wall_started
    return {
        "requests": count,
        "errors": errors,
        "content_chunks": dict(chunks_seen),
        "last_byte_ms": _percentiles(times),
        "client_cpu_share": (time.process_time() - cpu_started) / wall,
    }


def stream_probe(url: str, auth: str | None, count: int) -> dict:
    return asyncio.run(_stream_probe(url, auth, count, warmup=max(5, count // 10)))


async def _first_visible_probe(url: str, auth: str | None, count: int, warmup: int) -> dict:
    """Sequential prose streams: the time to the first event, and to the first event whose
    delta shows text (what a reader sees first)."""
    import aiohttp

    body = {**json.loads(BODY), "model": PROSE_MODEL, "stream": True}
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    first_event: list[float] = []
    first_visible: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        for i in range(warmup + count):
            started = time.perf_counter()
            event_at = visible_at = None
            try:
                async with client.post(url, data=payload, headers=headers) as response:
                    async for line in response.content:
                        if not line.startswith(b"data: {"):
                            continue
                        now = time.perf_counter()
                        event_at = event_at or now
                        choices = json.loads(line[6:]).get("choices") or [{}]
                        if visible_at is None and choices[0].get("delta", {}).get("content"):
                            visible_at = now
            except (aiohttp.ClientError, TimeoutError):
                event_at = None
            if i < warmup:
                continue
            if event_at is None or visible_at is None:
                errors += 1
                continue
            first_event.append((event_at - started) * 1000)
            first_visible.append((visible_at - started) * 1000)
    return {
        "requests": count,
        "errors": errors,
        "word_spacing_ms": PROSE_SPACING_MS,
        "first_event_ms": _percentiles(first_event),
        "first_visible_ms": _percentiles(first_visible),
    }


def first_visible_probe(url: str, auth: str | None, count: int) -> dict:
    return asyncio.run(_first_visible_probe(url, auth, count, warmup=max(3, count // 10)))


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": statistics.median(ordered),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


# -- memory -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name sits in parentheses and may hold spaces; ppid follows the state.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return sorted(found)


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _is_writer(pid: int) -> bool:
    return b"inference.metering_writer" in _cmdline(pid)


def web_workers(master: int) -> list[int]:
    """The server's worker processes: the master's children, less multiprocessing helpers
    and the gateway's metering writers."""
    workers = []
    for pid in _children(master):
        cmdline = _cmdline(pid)
        if not cmdline or b"resource_tracker" in cmdline or b"semaphore_tracker" in cmdline:
            continue
        if _is_writer(pid):
            continue
        workers.append(pid)
    return workers or [master]


def metering_writers(master: int) -> list[int]:
    """The gateway's metering writers (inference/metering_writer.py): one beside each web
    process, its child."""
    workers = web_workers(master)
    return [pid for parent in workers for pid in _children(parent) if _is_writer(pid)]


def rss_snapshot(master: int) -> dict[str, int]:
    """VmRSS in KiB of the master, each worker (by pid) and each metering writer
    (`writer-<pid>`): the writers' memory counts in the growth check too."""
    snapshot = {"master": _rss_kib(master) or 0}
    for pid in web_workers(master):
        snapshot[str(pid)] = _rss_kib(pid) or 0
    for pid in metering_writers(master):
        snapshot[f"writer-{pid}"] = _rss_kib(pid) or 0
    return snapshot


# -- the three paths ----------------------------------------------------------------------


def start_upstream(procs: Processes, args) -> str:
    port = free_port()
    argv = [PYTHON, str(BENCH / "upstream.py"), "--host", HOST, "--port", str(port)]
    argv += ["--chunks", str(args.chunks), "--spacing-ms", str(args.spacing_ms)]
    argv += ["--prose-spacing-ms", str(PROSE_SPACING_MS)]
    proc = procs.start("upstream", argv)
    url = f"http://{HOST}:{port}/v1"
    wait_ready(
        lambda: http_post(f"{url}/chat/completions", BODY, None)[0] == 200, proc, "upstream", 20
    )
    return url


def gateway_env(data_dir: Path, external_db: bool) -> dict:
    env = {
        k: v for k, v in os.environ.items() if external_db or k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(48),
        CUBEAI_TOKEN_PEPPERS=f"b1:{secrets.token_urlsafe(40)}",
        DJANGO_ALLOWED_HOSTS=HOST,
        DJANGO_SECURE_SSL_REDIRECT="false",
        CUBEAI_DATA_DIR=str(data_dir),
        CUBEAI_LOG_LEVEL="WARNING",
        # A bench of the hop, not of the limiter's verdicts: the limits stay on, set far away.
        CUBEAI_RATE_LIMIT_TOKEN_RPM="100000000",  # noqa: S106 -- a rate, not a secret.
        CUBEAI_RATE_LIMIT_DOMAIN_RPM="100000000",
        # Tokens per minute too: at 1,000 requests/s the default token limit (200,000 a
        # minute) answered 429 to a third of the c=64 run.
        CUBEAI_RATE_LIMIT_TOKEN_TPM="100000000",  # noqa: S106
        CUBEAI_RATE_LIMIT_DOMAIN_TPM="100000000",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def prepare_gateway(env: dict, data_dir: Path, upstream_url: str) -> tuple[str, str]:
    """Migrate, create the demo domain and PAT, register the upstream; (domain id, token)."""

    def manage(*argv: str) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *argv],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {argv[0]} failed: {done.stderr[-1500:]}")
        return done.stdout

    manage("migrate", "--noinput", "--verbosity", "0")
    demo = json.loads(manage("bootstrap_demo", "--force", "--json").strip().splitlines()[-1])
    registry = data_dir / "bench-backends.yaml"
    registry.write_text(
        "backends:\n"
        "  - name: bench-upstream\n"
        f"    base_url: {upstream_url}\n"
        "    kind: openai\n"
        "    tee_type: none\n"
        "    allow_not_confidential: true\n"
        "models:\n"
        f"  - name: {MODEL}\n"
        "    tasks: [chat]\n"
        "    context_length: 8192\n"
        "    public: true\n"
        "    owned_by: bench\n"
        "    deployments:\n"
        f"      - {{backend: bench-upstream, upstream_model: {MODEL}}}\n"
        f"  - name: {PROSE_MODEL}\n"
        "    tasks: [chat]\n"
        "    public: true\n"
        "    deployments:\n"
        f"      - {{backend: bench-upstream, upstream_model: {PROSE_MODEL}}}\n"
    )
    manage("apply_backends", str(registry))
    return demo["domain_id"], demo["token"]


def start_gateway(procs: Processes, env: dict, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = [PYTHON, "-m", "uvicorn", "cubeai.asgi:application", "--host", HOST]
    argv += ["--port", str(port), "--workers", str(workers), "--loop", "uvloop"]
    # The production server's protocol (`make run`, deploy/): httptools with a header timer.
    argv += ["--http", "cubeai.server:HttpToolsProtocol", "--no-server-header"]
    argv += ["--no-access-log", "--log-level", "warning"]
    return procs.start("gateway", argv, env=env), port


def ensure_litellm() -> Path | None:
    """LiteLLM's CLI in its own environment, installed from the pinned file if missing."""
    cli = LITELLM_VENV / "bin" / "litellm"
    if cli.exists():
        return cli
    log(f"installing LiteLLM into {LITELLM_VENV.relative_to(REPO)} (once; a few minutes)")
    try:
        subprocess.run([PYTHON, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=120)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet"]
        subprocess.run([*pip, "-r", str(LITELLM_REQUIREMENTS)], check=True, timeout=1200)
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"LiteLLM could not be installed: {exc}")
        return None
    return cli if cli.exists() else None


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or "unknown"


def start_litellm(
    procs: Processes, cli: Path, upstream_url: str, workers: int, data_dir: Path
) -> tuple[subprocess.Popen, int, str]:
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    config = data_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream_url}\n"
        "      api_key: sk-bench-upstream\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV", "PYTHONPATH")
    }
    # Nothing outside loopback: the bundled model cost map, no telemetry, no update checks.
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",
        DISABLE_ADMIN_UI="True",
        PYTHONUNBUFFERED="1",
    )
    argv = [str(cli), "--config", str(config), "--host", HOST, "--port", str(port)]
    argv += ["--num_workers", str(workers)]
    # Not from the repository: uvicorn puts its working directory on sys.path, and this
    # project's packages (guardrails, tokens...) would shadow LiteLLM's optional imports.
    proc = procs.start("litellm", argv, env=env, cwd=data_dir)
    return proc, port, master_key


def measure(
    name: str,
    url: str,
    auth: str | None,
    args,
    master: int | None,
) -> dict:
    """Warm up, then latency at c=1, throughput at c=64, the stream, and RSS over N requests."""
    result: dict = {"url": url}
    log(f"{name}: warm-up")
    # 64 connections, so that the kernel spreads them over both workers: a worker that
    # served few of the warm-up's requests was not warm, and its later growth looked large.
    run_wrk(url, auth, 64, args.warmup)
    if master is not None:
        result["rss_kib_after_warmup"] = rss_snapshot(master)
    log(f"{name}: latency at c=1 for {args.duration:g} s")
    result["c1"] = run_wrk(url, auth, 1, args.duration)
    log(f"{name}: throughput at c=64 for {args.duration:g} s")
    result["c64"] = run_wrk(url, auth, 64, args.duration)
    log(f"{name}: {args.stream_requests} sequential {args.chunks}-chunk streams")
    result["stream"] = stream_probe(url, auth, args.stream_requests)
    if name != "litellm":
        log(f"{name}: {args.prose_requests} sequential prose streams, to the first word")
        result["first_visible"] = first_visible_probe(url, auth, args.prose_requests)
    if master is not None:
        served = result["c1"]["requests"] + result["c64"]["requests"] + args.stream_requests
        topups = []
        budget = time.monotonic() + args.rss_max_seconds
        for _ in range(6):
            missing = args.rss_requests - served
            left = budget - time.monotonic()
            if missing <= 0 or left < 1:
                break
            rate = max(1.0, result["c64"]["rps"])
            seconds = min(left, max(1.0, missing / rate * 1.1))
            log(f"{name}: {missing} more requests for the RSS check (~{seconds:.0f} s)")
            topup = run_wrk(url, auth, 64, seconds)
            topups.append({k: topup[k] for k in ("requests", "rps", "error_count")})
            served += topup["requests"]
        result["rss_requests_served"] = served
        result["rss_topup_runs"] = topups
        result["rss_kib_after_requests"] = rss_snapshot(master)
        result["rss_growth"] = rss_growth(
            result["rss_kib_after_warmup"], result["rss_kib_after_requests"]
        )
    return result


def rss_growth(before: dict[str, int], after: dict[str, int]) -> dict:
    per_worker = {
        pid: (after[pid] - kib) / kib
        for pid, kib in before.items()
        if pid != "master" and pid in after and kib
    }
    total_before = sum(v for k, v in before.items() if k in per_worker)
    total_after = sum(v for k, v in after.items() if k in per_worker)
    return {
        "per_worker": per_worker,
        "max": max(per_worker.values()) if per_worker else None,
        "workers_total_before_kib": total_before,
        "workers_total_after_kib": total_after,
    }


# -- profile ------------------------------------------------------------------------------


def profile_gateway(url: str, auth: str, master: int, seconds: float, out_dir: Path) -> dict:
    """py-spy on every gateway worker during a c=64 run; top frames by self and total time."""
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed (pip install -r requirements-dev.txt)"}
    recorders = []
    for pid in web_workers(master):
        raw = out_dir / f"gateway-profile-{pid}.txt"
        argv = [py_spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
        argv += ["--duration", str(max(1, round(seconds))), "--nonblocking", "-o", str(raw)]
        recorders.append(
            (raw, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        )
    time.sleep(0.5)
    load = run_wrk(url, auth, 64, seconds)
    stacks: Counter[str] = Counter()
    for raw, proc in recorders:
        try:
            _, err = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            continue
        if proc.returncode != 0 or not raw.exists():
            return {"error": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                stacks[stack] += int(count)
    return {"rps_while_profiled": load["rps"], **summarise_stacks(stacks)}


FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    match = FRAME_RE.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def _area(path_frames: list[str]) -> str:
    """Attribute a sample to the innermost frame of a recognisable layer."""
    areas = (
        ("inference/", "gateway code (inference/)"),
        ("guardrails/", "guardrails"),
        ("tokens/", "tokens"),
        ("ninja/", "django-ninja (parse, validate, auth)"),
        ("pydantic", "pydantic"),
        ("aiohttp/", "aiohttp client (upstream)"),
        ("django/db/", "Django ORM / DB"),
        ("asgiref/", "asgiref (sync_to_async)"),
        ("django/core/handlers/asgi", "Django ASGI handler"),
        ("django/middleware", "Django middleware"),
        ("django/contrib", "Django middleware"),
        ("django/", "Django core"),
        ("uvicorn/", "uvicorn (HTTP server)"),
        ("channels/", "channels router"),
        ("asyncio/", "asyncio / uvloop"),
        ("uvloop", "asyncio / uvloop"),
    )
    for frame in reversed(path_frames):
        for marker, area in areas:
            if marker in frame:
                return area
    return "other"


def summarise_stacks(stacks: Counter[str], top: int = 25) -> dict:
    total = sum(stacks.values()) or 1
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        names = [_frame_name(f) for f in frames if not f.startswith("thread ")]
        if not names:
            continue
        self_time[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
        areas[_area(frames)] += count

    def share(counter: Counter[str]) -> list[list]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self_percent": share(self_time),
        "total_percent": share(inclusive),
        "area_percent": share(areas),
    }


# -- report -------------------------------------------------------------------------------


def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": commit,
        # Other work on the machine skews every figure; compare rows of one run only.
        "loadavg_at_start": os.getloadavg(),
    }


def added(result: dict, direct: dict) -> dict:
    c1, base = result["c1"]["latency_ms"], direct["c1"]["latency_ms"]
    stream = result["stream"]["last_byte_ms"].get("p50")
    base_stream = direct["stream"]["last_byte_ms"].get("p50")
    return {
        "c1_p50_ms": c1["p50"] - base["p50"],
        "c1_p90_ms": c1["p90"] - base["p90"],
        "c1_p99_ms": c1["p99"] - base["p99"],
        "stream_last_byte_p50_ms": (
            stream - base_stream if stream is not None and base_stream is not None else None
        ),
        "first_event_p50_ms": _p50_gap(result, direct, "first_event_ms"),
        "first_visible_p50_ms": _p50_gap(result, direct, "first_visible_ms"),
    }


def _p50_gap(result: dict, direct: dict, key: str) -> float | None:
    mine = result.get("first_visible", {}).get(key, {}).get("p50")
    base = direct.get("first_visible", {}).get(key, {}).get("p50")
    return mine - base if mine is not None and base is not None else None


def verdicts(report: dict) -> dict:
    gateway = report["paths"].get("gateway", {})
    litellm = report["paths"].get("litellm", {})
    out = {}
    if "added" in gateway:
        p50 = gateway["added"]["c1_p50_ms"]
        out["added_p50_c1"] = {
            "target": f"< {TARGET_ADDED_P50_MS} ms",
            "value_ms": round(p50, 3),
            "met": p50 < TARGET_ADDED_P50_MS,
        }
        p99 = gateway["added"]["c1_p99_ms"]
        out["added_p99_c1"] = {
            "target": f"< {TARGET_ADDED_P99_MS} ms",
            "value_ms": round(p99, 3),
            "met": p99 < TARGET_ADDED_P99_MS,
        }
        errors = sum(gateway[run]["error_count"] for run in ("c1", "c64"))
        out["no_errors"] = {
            "target": "0 non-2xx at c=1 and c=64",
            "value": errors,
            "met": not errors,
        }
        c64 = gateway["c64"]["latency_ms"]
        tail = c64["p99"] / max(c64["p50"], 1e-9)
        out["c64_p99_over_p50"] = {
            "target": f"< {TARGET_C64_TAIL_RATIO:g}x",
            "value": round(tail, 2),
            "met": tail < TARGET_C64_TAIL_RATIO,
        }
        if "added" in litellm:
            share = p99 / max(litellm["added"]["c1_p99_ms"], 1e-9)
            out["added_p99_vs_litellm"] = {
                "target": f"< {TARGET_P99_SHARE_OF_LITELLM:g} of LiteLLM's added p99 at c=1",
                "value": round(share, 3),
                "met": share < TARGET_P99_SHARE_OF_LITELLM,
            }
        stream = gateway["added"]["stream_last_byte_p50_ms"]
        out["stream_added_last_chunk"] = {
            "target": f"< {TARGET_STREAM_ADDED_MS} ms",
            "value_ms": None if stream is None else round(stream, 3),
            "met": stream is not None and stream < TARGET_STREAM_ADDED_MS,
        }
        visible = gateway["added"]["first_visible_p50_ms"]
        event = gateway["added"]["first_event_p50_ms"]
        held = None if visible is None or event is None else visible - event
        out["first_visible_word"] = {
            "target": f"<= one word ({PROSE_SPACING_MS:g} ms) beyond the first event",
            "value_ms": None if held is None else round(held, 3),
            "met": held is not None and held <= PROSE_SPACING_MS,
        }
        growth = gateway.get("rss_growth", {}).get("max")
        out["rss_growth"] = {
            "target": f"< {TARGET_RSS_GROWTH:.0%} over {gateway.get('rss_requests_served', 0)}"
            " requests",
            "value": None if growth is None else round(growth, 4),
            "met": growth is not None and growth < TARGET_RSS_GROWTH,
        }
        if "c64" in litellm:
            ratio = gateway["c64"]["rps"] / max(litellm["c64"]["rps"], 1e-9)
            out["throughput_vs_litellm"] = {
                "target": f">= {TARGET_THROUGHPUT_RATIO:g}x LiteLLM at c=64",
                "value": round(ratio, 2),
                "met": ratio >= TARGET_THROUGHPUT_RATIO,
            }
        else:
            out["throughput_vs_litellm"] = {
                "target": f">= {TARGET_THROUGHPUT_RATIO:g}x LiteLLM at c=64",
                "value": None,
                "met": None,
                "note": "LiteLLM was not measured in this run",
            }
    return out


def table(report: dict) -> str:
    paths = report["paths"]
    rows = [
        (
            "path",
            "p50 c=1",
            "added p50/p90/p99",
            "req/s c=64",
            "errors",
            "stream last byte p50",
            "added",
            "RSS/worker warm→after",
        )
    ]
    for name in ("direct", "gateway", "litellm"):
        result = paths.get(name)
        if result is None:
            continue
        if "error" in result:
            rows.append((name, "n/a", result["error"][:60], "", "", "", "", ""))
            continue
        lat = result["c1"]["latency_ms"]
        add = result.get("added")
        add_text = (
            f"{add['c1_p50_ms']:.2f}/{add['c1_p90_ms']:.2f}/{add['c1_p99_ms']:.2f} ms"
            if add
            else "-"
        )
        stream = result["stream"]["last_byte_ms"].get("p50")
        stream_added = add["stream_last_byte_p50_ms"] if add else None
        rss = "-"
        if "rss_kib_after_warmup" in result:
            before, after = result["rss_kib_after_warmup"], result["rss_kib_after_requests"]
            rss = ", ".join(
                ("writer " if p.startswith("writer-") else "")
                + f"{before[p] / 1024:.0f}→"
                + (f"{after[p] / 1024:.0f} MiB" if p in after else "exited")
                for p in before
                if p != "master"
            )
            rss += f" ({result['rss_requests_served']:,} req)"
        errors = result["c64"]["error_count"] + result["c1"]["error_count"]
        errors += result["stream"]["errors"]
        rows.append(
            (
                name,
                f"{lat['p50']:.2f} ms",
                add_text,
                f"{result['c64']['rps']:,.0f}",
                str(errors),
                f"{stream:.2f} ms" if stream is not None else "n/a",
                f"{stream_added:.2f} ms" if stream_added is not None else "-",
                rss,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append(" | ".join(str(cell).ljust(widths[j]) for j, cell in enumerate(row)))
        if i == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines.append("")
    for name, verdict in report["targets"].items():
        met = {True: "MET", False: "MISSED", None: "n/a"}[verdict["met"]]
        value = verdict.get("value_ms", verdict.get("value"))
        lines.append(f"{name:<26} {verdict['target']:<40} {value!s:<10} {met}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="server workers for each proxy")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per stream")
    parser.add_argument("--spacing-ms", type=float, default=0.0, help="upstream chunk spacing")
    parser.add_argument("--stream-requests", type=int, help="sequential streams (default 200)")
    parser.add_argument("--prose-requests", type=int, help="sequential prose streams (100)")
    parser.add_argument("--rss-requests", type=int, help="requests for the RSS check (20,000)")
    parser.add_argument(
        "--rss-max-seconds",
        type=float,
        default=180.0,
        help="stop the RSS top-up after this long (a slow proxy reports fewer requests)",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway at c=64")
    parser.add_argument(
        "--external-db",
        action="store_true",
        help="use DATABASE_URL/REDIS_URL from the environment (default: throwaway SQLite)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "gateway.json")
    args = parser.parse_args()
    args.duration = args.duration or (2.0 if args.quick else 8.0)
    args.warmup = 1.0 if args.quick else 3.0
    args.stream_requests = args.stream_requests or (40 if args.quick else 200)
    args.prose_requests = args.prose_requests or (20 if args.quick else 100)
    args.rss_requests = args.rss_requests or (2_000 if args.quick else 20_000)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    # SIGTERM unwinds like Ctrl-C, so that everything started below is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "machine": machine(),
        "settings": {
            "quick": args.quick,
            "wrk_seconds": args.duration,
            "workers": args.workers,
            "stream_chunks": args.chunks,
            "stream_spacing_ms": args.spacing_ms,
            "stream_requests": args.stream_requests,
            "rss_requests": args.rss_requests,
            "body": json.loads(BODY),
            "database": "external" if args.external_db else "sqlite (throwaway)",
            "load_generator": "wrk " + _wrk_version(),
        },
        "paths": {},
    }
    with tempfile.TemporaryDirectory(prefix="cubeai-bench-") as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "logs").mkdir()
        procs = Processes(tmp_dir / "logs")
        try:
            run_all(procs, args, tmp_dir, report)
        except KeyboardInterrupt:
            log("interrupted; stopping everything")
            return 130
        except Exception as exc:
            log(f"failed: {exc}")
            for name, _ in procs.started:
                tail = procs.log_tail(name)
                if tail:
                    log(f"--- {name} log (tail) ---\n{tail}")
            raise
        finally:
            procs.stop_all()
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["targets"] = verdicts(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(report))
    print(
        f"\nwrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}"
    )
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (done.stdout + done.stderr).split()[1] if (done.stdout + done.stderr).split() else ""


def run_all(procs: Processes, args, tmp_dir: Path, report: dict) -> None:
    upstream_url = start_upstream(procs, args)
    log(f"upstream at {upstream_url}")
    direct = measure("direct", f"{upstream_url}/chat/completions", None, args, master=None)
    report["paths"]["direct"] = direct

    env = gateway_env(tmp_dir, args.external_db)
    log("gateway: migrate, bootstrap_demo, apply_backends")
    domain_id, token = prepare_gateway(env, tmp_dir, upstream_url)
    proc, port = start_gateway(procs, env, args.workers)
    url = f"http://{HOST}:{port}/proxy/{domain_id}/v1/chat/completions"
    auth = f"Bearer {token}"
    wait_ready(lambda: http_post(url, BODY, auth)[0] == 200, proc, "gateway", 90)
    status, headers, text = http_post(url, BODY, auth)
    lowered = {k.lower(): v for k, v in headers.items()}
    if status != 200 or '"choices"' not in text or lowered.get("x-cube-tee") != "none":
        raise RuntimeError(f"the gateway answered unexpectedly: {status} {text[:300]}")
    log(f"gateway at {url} ({len(web_workers(proc.pid))} workers)")
    gateway = measure("gateway", url, auth, args, master=proc.pid)
    gateway["added"] = added(gateway, direct)
    if args.profile:
        log(f"gateway: py-spy on the workers during {args.duration:g} s at c=64")
        gateway["profile"] = profile_gateway(url, auth, proc.pid, args.duration, RESULTS)
    report["paths"]["gateway"] = gateway
    procs.stop(proc)

    if args.no_litellm:
        return
    cli = ensure_litellm()
    if cli is None:
        report["paths"]["litellm"] = {"error": "LiteLLM could not be installed here"}
        return
    version = litellm_version()
    report["settings"]["litellm_version"] = version
    proc, port, master_key = start_litellm(procs, cli, upstream_url, args.workers, tmp_dir)
    url = f"http://{HOST}:{port}/v1/chat/completions"
    auth = f"Bearer {master_key}"
    try:
        wait_ready(lambda: http_post(url, BODY, auth)[0] == 200, proc, "LiteLLM", 180)
    except RuntimeError as exc:
        tail = procs.log_tail("litellm")
        report["paths"]["litellm"] = {"error": f"LiteLLM {version} did not start: {exc}"}
        log(f"LiteLLM did not start: {exc}\n{tail}")
        return
    log(f"LiteLLM {version} at {url} ({len(web_workers(proc.pid))} workers)")
    litellm = measure("litellm", url, auth, args, master=proc.pid)
    litellm["added"] = added(litellm, direct)
    report["paths"]["litellm"] = litellm
    procs.stop(proc)


if __name__ == "__main__":
    sys.exit(main())
