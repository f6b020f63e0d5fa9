"""Transcriptions and translations on the real Whisper models through faster-whisper."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.agent.conftest import ENGLISH_SENTENCE

pytestmark = pytest.mark.models

SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")
VTT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    # Levenshtein distance over words, one row at a time.
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / len(ref)


def transcribe(
    client: TestClient,
    audio: bytes,
    *,
    filename: str = "speech.wav",
    path: str = "/v1/audio/transcriptions",
    **fields: str | list[str],
):
    data = {"model": "whisper-tiny.en", **fields}
    return client.post(path, files={"file": (filename, audio)}, data=data)


def seconds(parts: tuple[str, ...]) -> float:
    h, m, s, ms = (int(p) for p in parts)
    return h * 3600 + m * 60 + s + ms / 1000


def test_it_transcribes_english_speech_with_a_low_word_error_rate(
    agent: TestClient, english_wav: Path
) -> None:
    response = transcribe(agent, english_wav.read_bytes())
    assert response.status_code == 200
    body = response.json()
    assert word_error_rate(ENGLISH_SENTENCE, body["text"]) < 0.3, body["text"]
    assert body["usage"]["type"] == "duration"


def test_it_translates_german_speech_to_english_text(agent: TestClient, german_wav: Path) -> None:
    response = transcribe(
        agent, german_wav.read_bytes(), path="/v1/audio/translations", model="whisper-base"
    )
    assert response.status_code == 200
    text = response.json()["text"]
    assert text.strip()
    assert text.isascii(), text


def test_it_transcribes_german_with_the_multilingual_model(
    agent: TestClient, german_wav: Path
) -> None:
    response = transcribe(
        agent,
        german_wav.read_bytes(),
        model="whisper-base",
        language="de",
        response_format="verbose_json",
    )
    body = response.json()
    assert body["language"] == "german"
    assert "morgen" in body["text"].lower()


def test_every_response_format_is_well_formed(agent: TestClient, english_wav: Path) -> None:
    audio = english_wav.read_bytes()

    text = transcribe(agent, audio, response_format="text")
    assert text.headers["content-type"].startswith("text/plain")
    assert "fox" in text.text.lower()

    srt = transcribe(agent, audio, response_format="srt").text
    blocks = [b.splitlines() for b in srt.strip().split("\n\n")]
    for number, block in enumerate(blocks, start=1):
        assert block[0] == str(number)
        match = SRT_TIME.match(block[1])
        assert match, block[1]
        assert seconds(match.groups()[:4]) <= seconds(match.groups()[4:])
        assert block[2].strip()

    vtt = transcribe(agent, audio, response_format="vtt")
    assert vtt.headers["content-type"].startswith("text/vtt")
    head, *cues = vtt.text.strip().split("\n\n")
    assert head == "WEBVTT"
    assert cues
    for cue in cues:
        timing, caption = cue.splitlines()[:2]
        match = VTT_TIME.match(timing)
        assert match, timing
        assert seconds(match.groups()[:4]) <= seconds(match.groups()[4:])
        assert caption.strip()

    verbose = transcribe(
        agent,
        audio,
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    ).json()
    assert verbose["task"] == "transcribe"
    assert verbose["language"] == "english"
    assert 3.0 < verbose["duration"] < 5.0
    segment = verbose["segments"][0]
    assert {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob"} <= set(
        segment
    )
    assert verbose["words"]
    assert all(w["start"] <= w["end"] for w in verbose["words"])


def encode(wav: Path, container: str, codec: str) -> bytes:
    """Re-encode a WAV with PyAV, as a client would upload other formats."""
    out = io.BytesIO()
    with av.open(str(wav)) as source, av.open(out, "w", format=container) as target:
        rate = 48000 if codec == "libopus" else 16000
        stream = target.add_stream(codec, rate=rate)
        stream.layout = "mono"
        if codec != "flac":
            # The encoders' low defaults at 16 kHz cost the toy model whole words.
            stream.bit_rate = 64000
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for frame in source.decode(audio=0):
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(
    ("container", "codec", "filename"),
    [
        ("mp3", "libmp3lame", "speech.mp3"),
        ("ipod", "aac", "speech.m4a"),
        ("webm", "libopus", "speech.webm"),
        ("ogg", "libopus", "speech.ogg"),
        ("flac", "flac", "speech.flac"),
    ],
)
def test_it_decodes_common_audio_formats(
    agent: TestClient, english_wav: Path, container: str, codec: str, filename: str
) -> None:
    audio = encode(english_wav, container, codec)
    response = transcribe(agent, audio, filename=filename)
    assert response.status_code == 200, response.text
    # Decoding is what is tested: garbage scores near 1. The accuracy bar (under 30 %) is the
    # WAV test's; lossy codecs cost tiny.en a word or two more, and that varies between runs.
    assert word_error_rate(ENGLISH_SENTENCE, response.json()["text"]) < 0.5


def silence_wav() -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="wav") as target:
        stream = target.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 16000), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(
    ("audio", "fields", "status", "param"),
    [
        (b"this is not audio at all " * 50, {}, 400, "file"),
        (b"", {}, 400, "file"),
        (None, {"response_format": "docx"}, 400, "response_format"),
        (None, {"model": "whisper-9"}, 404, "model"),
        (None, {"temperature": "hot"}, 400, "temperature"),
        (None, {"language": "de"}, 400, "language"),
        (None, {"timestamp_granularities[]": "word"}, 400, "timestamp_granularities[]"),
        (None, {"speaker": "alice"}, 400, "speaker"),
    ],
    ids=[
        "not-audio",
        "zero-bytes",
        "bad-format",
        "unknown-model",
        "bad-temperature",
        "english-only-model",
        "granularities-need-verbose",
        "unknown-field",
    ],
)
def test_it_rejects_bad_audio_requests(
    agent: TestClient, audio: bytes | None, fields: dict, status: int, param: str
) -> None:
    response = transcribe(agent, silence_wav() if audio is None else audio, **fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}
    # The agent keeps serving after bad input.
    assert agent.get("/health").status_code == 200


def test_translation_needs_a_multilingual_model(agent: TestClient) -> None:
    response = transcribe(agent, silence_wav(), path="/v1/audio/translations")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_a_streamed_transcription_sends_each_segment_as_it_is_decoded(
    agent: TestClient, tmp_path: Path
) -> None:
    from tests.agent.conftest import make_speech

    # Long enough for Whisper to cut it into several segments.
    text = " ".join([ENGLISH_SENTENCE] * 6)
    wav = make_speech(tmp_path, "long", text)
    response = transcribe(agent, wav.read_bytes(), stream="true")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    done = events[-1]
    assert done["type"] == "transcript.text.done"
    assert len(deltas) >= 2, events
    assert [d["segment"]["id"] for d in deltas] == list(range(len(deltas)))
    ends = [d["segment"]["end"] for d in deltas]
    assert ends == sorted(ends)
    assert all(d["duration"] == deltas[0]["duration"] for d in deltas)
    assert 0 < ends[0] < deltas[0]["duration"]
    assert "".join(d["delta"] for d in deltas).strip() == done["text"]
    # Whisper tiny mishears espeak's voice now and then (it conditions on what it heard
    # before, so a slip repeats); the words it always gets are there once per sentence.
    heard = words(done["text"])
    assert min(heard.count(word) for word in ("quick", "lazy", "river")) >= 5, done["text"]
    assert len(done["segments"]) == len(deltas)
    assert done["usage"]["type"] == "duration"


def test_a_streamed_transcription_refuses_a_bad_stream_flag_and_language_before_streaming(
    agent: TestClient, english_wav: Path
) -> None:
    bad_flag = transcribe(agent, english_wav.read_bytes(), stream="maybe")
    assert bad_flag.status_code == 400
    assert bad_flag.json()["error"]["param"] == "stream"
    bad_language = transcribe(agent, english_wav.read_bytes(), stream="true", language="de")
    assert bad_language.status_code == 400
    assert bad_language.json()["error"]["param"] == "language"
