"""Benchmark of the agent's built-in CPU models, end to end through its HTTP app.

Records the chat model's decode tokens/s, time to first token and batched throughput,
embeddings/s, and the real-time factor of transcription and translation. Prints a table and
writes bench/results/agent.json. Run with ``.venv/bin/python bench/agent_bench.py``.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from starlette.testclient import TestClient  # noqa: E402

from agent.app import create_app  # noqa: E402
from agent.config import AgentConfig  # noqa: E402
from agent.credentials import Entry, digest, write_file  # noqa: E402

CHAT = "smollm2-135m-instruct"
RESULTS = REPO / "bench" / "results" / "agent.json"
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
GERMAN = "Guten Morgen, wie geht es dir heute? Das Wetter ist sehr schön."


def stream_once(client: TestClient, seed: int) -> tuple[float, float, int]:
    """One streamed completion: (time to first token, total time, completion tokens)."""
    body = {
        "model": CHAT,
        "prompt": f"Once upon a time, in a village by the sea, story {seed}:",
        "max_tokens": 128,
        "temperature": 0.9,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["text"] and first is None:
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return first or 0.0, time.perf_counter() - started, tokens


def bench_chat(client: TestClient) -> dict:
    stream_once(client, 0)  # warm-up
    runs = [stream_once(client, seed) for seed in range(1, 6)]
    ttft = statistics.median(r[0] for r in runs)
    decode = statistics.median((r[2] - 1) / (r[1] - r[0]) for r in runs if r[2] > 1)

    def one(seed: int) -> int:
        body = {
            "model": CHAT,
            "prompt": f"Once upon a time, story {seed}:",
            "max_tokens": 64,
            "temperature": 0.9,
            "seed": seed,
        }
        return client.post("/v1/completions", json=body).json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    single_tokens = one(100)
    single_s = time.perf_counter() - started
    with ThreadPoolExecutor(4) as pool:
        started = time.perf_counter()
        tokens = sum(pool.map(one, range(200, 204)))
        together_s = time.perf_counter() - started
    return {
        "time_to_first_token_ms": round(ttft * 1000, 1),
        "decode_tokens_per_s": round(decode, 1),
        "one_request_s": round(single_s, 3),
        "one_request_tokens_per_s": round(single_tokens / single_s, 1),
        "four_concurrent_s": round(together_s, 3),
        "four_concurrent_tokens_per_s": round(tokens / together_s, 1),
        "concurrency_slowdown_vs_one": round(together_s / single_s, 2),
    }


def bench_embeddings(client: TestClient) -> dict:
    texts = [f"Sentence {i} about topic {i % 17} with a few more words." for i in range(256)]
    client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts[:8]})
    started = time.perf_counter()
    for _ in range(20):
        client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "hello world"})
    single_ms = (time.perf_counter() - started) / 20 * 1000
    started = time.perf_counter()
    for start in range(0, len(texts), 64):
        client.post(
            "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts[start : start + 64]}
        )
    elapsed = time.perf_counter() - started
    return {
        "single_input_ms": round(single_ms, 1),
        "embeddings_per_s": round(len(texts) / elapsed, 1),
    }


def speech(directory: Path, text: str, voice: str) -> Path | None:
    if not Path("/usr/bin/espeak-ng").exists() or not Path("/usr/bin/sox").exists():
        return None
    raw, out = directory / f"{voice}-raw.wav", directory / f"{voice}.wav"
    subprocess.run(["/usr/bin/espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
    subprocess.run(
        ["/usr/bin/sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True
    )
    return out


def real_time_factor(client: TestClient, wav: Path, path: str, fields: dict) -> float:
    audio = wav.read_bytes()
    data = {**fields, "response_format": "verbose_json"}
    client.post(path, files={"file": ("s.wav", audio)}, data=data)  # warm-up
    factors = []
    for _ in range(3):
        started = time.perf_counter()
        body = client.post(path, files={"file": ("s.wav", audio)}, data=data).json()
        factors.append((time.perf_counter() - started) / body["duration"])
    return round(statistics.median(factors), 3)


def bench_audio(client: TestClient) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        english = speech(Path(tmp), SENTENCE, "en")
        german = speech(Path(tmp), GERMAN, "de")
        if english is None or german is None:
            return {"skipped": "espeak-ng and sox are needed to synthesise speech"}
        return {
            "transcription_rtf_whisper_tiny_en": real_time_factor(
                client, english, "/v1/audio/transcriptions", {"model": "whisper-tiny.en"}
            ),
            "transcription_rtf_whisper_base_de": real_time_factor(
                client,
                german,
                "/v1/audio/transcriptions",
                {"model": "whisper-base", "language": "de"},
            ),
            "translation_rtf_whisper_base": real_time_factor(
                client, german, "/v1/audio/translations", {"model": "whisper-base"}
            ),
        }


def main() -> None:
    threads = int(os.environ.get("CUBEAI_AGENT_THREADS", "2"))
    # The agent serves only callers with its credential; this run makes one of its own.
    credential = secrets.token_urlsafe(32)
    state = Path(tempfile.mkdtemp(prefix="agent-bench-")) / "credentials.json"
    write_file(state, [Entry(digest(credential), 1)])
    config = AgentConfig(attestation="none", threads=threads, credentials_file=state)
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {credential}"}
    with TestClient(create_app(config), headers=headers) as client:
        start_s = time.perf_counter() - started
        results = {
            "recorded_at": datetime.now(UTC).isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "threads_per_runtime": threads,
                "python": platform.python_version(),
            },
            "start_s": round(start_s, 2),
            "chat": bench_chat(client),
            "embeddings": bench_embeddings(client),
            "audio": bench_audio(client),
        }
    rows = [("start-up (all four models)", f"{results['start_s']} s")]
    rows += [(f"chat: {k}", str(v)) for k, v in results["chat"].items()]
    rows += [(f"embeddings: {k}", str(v)) for k, v in results["embeddings"].items()]
    rows += [(f"audio: {k}", str(v)) for k, v in results["audio"].items()]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
