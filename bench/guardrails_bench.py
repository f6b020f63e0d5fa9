"""Benchmark of the guardrails on the hot path: the default policy on a 4 KB prompt, and
streaming sanitization per chunk.

Targets (this machine): input check median under 1 ms; stream sanitization under 0.2 ms
per chunk. Prints a table and writes bench/results/guardrails.json.
Run: .venv/bin/python bench/guardrails_bench.py
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guardrails import DEFAULT_POLICY, compile_policy

RESULTS = Path(__file__).resolve().parent / "results" / "guardrails.json"

PARAGRAPH = (
    "Our quarterly review covers 3 regions and 14 product lines. Revenue grew 12% to "
    "$4.2M while support tickets fell from 1,204 to 987. Please summarise the findings "
    "for the board, keep the tone neutral, and list the top 5 risks with owners. "
    "Contact the finance lead at jane.doe@example.com before Friday; the draft is in "
    "folder Q3/2025/board and uses the template agreed on 2025-09-14. "
)


def make_prompt(size: int = 4096) -> list[dict[str, str]]:
    text = (PARAGRAPH * (size // len(PARAGRAPH) + 1))[:size]
    return [
        {"role": "system", "content": "You are a helpful assistant for a finance team."},
        {"role": "user", "content": text},
    ]


def measure(fn, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 4),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)], 4),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)], 4),
        "n": len(ordered),
    }


def main() -> None:
    pipeline = compile_policy(DEFAULT_POLICY)
    prompt = make_prompt()
    for _ in range(200):
        pipeline.check_input(prompt)
    rows: dict[str, dict[str, float]] = {}
    rows["input, default policy, 4 KB prompt"] = summary(
        measure(lambda: pipeline.check_input(prompt), 3000)
    )
    compile_samples = measure(lambda: compile_policy(DEFAULT_POLICY), 3000)
    rows["compile_policy (cached)"] = summary(compile_samples)

    completion = (PARAGRAPH + "Call me at (415) 555-2671. ") * 20
    rows["output, whole 4 KB completion"] = summary(
        measure(lambda: pipeline.check_output(completion), 1000)
    )

    for chunk_size in (4, 16):
        chunks = [completion[i : i + chunk_size] for i in range(0, len(completion), chunk_size)]
        per_chunk: list[float] = []
        for _ in range(30):
            sanitizer = pipeline.stream_sanitizer()
            for chunk in chunks:
                started = time.perf_counter_ns()
                sanitizer.feed(chunk)
                per_chunk.append((time.perf_counter_ns() - started) / 1e6)
            sanitizer.finish()
        rows[f"stream, per {chunk_size}-char chunk"] = summary(per_chunk)

    print(f"{'case':<40} {'median ms':>10} {'p90 ms':>10} {'p99 ms':>10} {'n':>7}")
    for name, row in rows.items():
        print(
            f"{name:<40} {row['median_ms']:>10.4f} {row['p90_ms']:>10.4f} {row['p99_ms']:>10.4f} {row['n']:>7}"
        )
    targets = {
        "input_median_under_1ms": rows["input, default policy, 4 KB prompt"]["median_ms"] < 1.0,
        "stream_chunk_median_under_0.2ms": all(
            row["median_ms"] < 0.2 for name, row in rows.items() if name.startswith("stream")
        ),
    }
    print("targets:", targets)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "policy": DEFAULT_POLICY.fingerprint,
                "results": rows,
                "targets_met": targets,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
