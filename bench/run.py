"""`make bench`: every benchmark of the project, one after the other, each its own process.

First the gateway bench (bench/gateway_bench.py: direct vs gateway vs LiteLLM's proxy), then
bench/agent_bench.py and bench/guardrails_bench.py where they exist. Arguments are passed
to the gateway bench (`--quick`, `--profile`, `--no-litellm`, ...); `--only gateway` runs one.
Results land in bench/results/. Exits non-zero if any bench failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHES = {
    "gateway": BENCH / "gateway_bench.py",
    "agent": BENCH / "agent_bench.py",
    "guardrails": BENCH / "guardrails_bench.py",
}


def run(name: str, script: Path, argv: list[str]) -> int:
    print(f"\n=== {name}: {script.relative_to(BENCH.parent)} {' '.join(argv)}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), *argv], cwd=BENCH.parent)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        # The child got the same Ctrl-C: let it stop what it started, then give up.
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHES), help="run this bench only")
    args, gateway_args = parser.parse_known_args()
    codes = {}
    for name, script in BENCHES.items():
        if args.only and name != args.only:
            continue
        if not script.exists():
            print(f"\n=== {name}: {script.name} not found, skipped", flush=True)
            continue
        codes[name] = run(name, script, gateway_args if name == "gateway" else [])
    print(
        "\n"
        + ", ".join(
            f"{name}: {'ok' if code == 0 else f'exit {code}'}" for name, code in codes.items()
        )
    )
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
