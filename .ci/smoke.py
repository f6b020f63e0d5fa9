"""`.ci/run`'s check of `make run`: the official `openai` client calls the running platform as
a newcomer would, with the demo domain and token. Exits non-zero on the first failure.

Usage: python .ci/smoke.py BASE_URL TOKEN   (espeak-ng and sox make the speech)
"""

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

CHAT = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SPOKEN = "the quick brown fox jumps over the lazy dog"


def step(name: str, call):
    started = time.monotonic()
    detail = call()
    print(f"  ok  {name:<14} {time.monotonic() - started:6.2f} s  {detail}", flush=True)


def first_chat(client: openai.OpenAI) -> str:
    """The first chat, once the agent serves: routing takes it in when it answers its health
    check, which may be after /readyz while it loads its models."""
    deadline = time.monotonic() + 300
    while True:
        try:
            answer = client.chat.completions.create(
                model=CHAT, messages=QUESTION, temperature=0, max_tokens=30
            )
        except openai.APIStatusError as exc:
            if exc.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(1)
            continue
        text = answer.choices[0].message.content
        assert "Paris" in text, text
        assert answer.usage.total_tokens > 0
        return repr(text)


def models(client: openai.OpenAI) -> str:
    ids = {model.id for model in client.models.list()}
    expected = {CHAT, "all-minilm-l6-v2", "whisper-tiny.en", "whisper-base"}
    assert expected <= ids, ids
    return ", ".join(sorted(ids))


def stream(client: openai.OpenAI) -> str:
    chunks = list(
        client.chat.completions.create(
            model=CHAT,
            messages=QUESTION,
            temperature=0,
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text, text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    return f"{len(chunks)} chunks, {chunks[-1].usage.total_tokens} tokens"


def embeddings(client: openai.OpenAI) -> str:
    result = client.embeddings.create(model="all-minilm-l6-v2", input=["hello", "world"])
    vectors = [item.embedding for item in result.data]
    assert len(vectors) == 2 and all(len(v) == 384 for v in vectors)
    assert vectors[0] != vectors[1]
    return "2 vectors of 384"


def transcription(client: openai.OpenAI) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        raw, wav = Path(tmp) / "raw.wav", Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), SPOKEN], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True
        )
        with wav.open("rb") as audio:
            text = client.audio.transcriptions.create(model="whisper-tiny.en", file=audio).text
    heard = set(re.findall(r"[a-z]+", text.lower()))
    found = [word for word in SPOKEN.split() if word in heard]
    assert len(found) >= 6, text
    return repr(text)


def main() -> None:
    base_url, token = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=120)
    step("chat", lambda: first_chat(client))
    step("models", lambda: models(client))
    step("chat stream", lambda: stream(client))
    step("embeddings", lambda: embeddings(client))
    step("transcription", lambda: transcription(client))


if __name__ == "__main__":
    main()
