"""Audio decoding and the response formats of the audio endpoints.

Uploads are decoded by PyAV (through faster-whisper) to 16 kHz mono float32, whatever the
container (wav, mp3, m4a, webm, ogg, flac); anything PyAV cannot read is a 400, not a 500.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any

import av
import numpy as np
from faster_whisper.audio import decode_audio as _decode

from agent.errors import invalid_request
from agent.runtimes import Transcript

SAMPLE_RATE = 16000
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def decode_audio(data: bytes) -> np.ndarray:
    """16 kHz mono float32 samples of an uploaded file; 400 if it is not audio."""
    if not data:
        raise invalid_request("The uploaded file is empty.", param="file")
    try:
        samples = _decode(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except (av.FFmpegError, ValueError, IndexError, OSError) as exc:
        # IndexError: a container with no audio stream (e.g. a still image).
        raise invalid_request(
            "The uploaded file could not be decoded as audio. Supported formats: "
            "flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, wav, webm.",
            param="file",
            code="invalid_audio",
        ) from exc
    if samples.size == 0:
        raise invalid_request(
            "The uploaded file contains no audio samples.", param="file", code="invalid_audio"
        )
    return samples


def render(transcript: Transcript, response_format: str, *, task: str) -> tuple[Any, str]:
    """The response body (a dict for JSON formats, else text) and its media type."""
    media_type = MEDIA_TYPES[response_format]
    if response_format == "json":
        return {"text": transcript.text, "usage": _usage(transcript)}, media_type
    if response_format == "verbose_json":
        body: dict[str, Any] = {
            "task": task,
            "language": transcript.language,
            "duration": transcript.duration,
            "text": transcript.text,
            "segments": [asdict(s) for s in transcript.segments],
            "usage": _usage(transcript),
        }
        if transcript.words is not None:
            body["words"] = [asdict(w) for w in transcript.words]
        return body, media_type
    if response_format == "text":
        return transcript.text + "\n", media_type
    if response_format == "srt":
        return to_srt(transcript), media_type
    return to_vtt(transcript), media_type


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{n}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for n, s in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in transcript.segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _usage(transcript: Transcript) -> dict[str, Any]:
    # OpenAI bills Whisper by duration and reports it this way; the gateway meters from it.
    return {"type": "duration", "seconds": max(1, round(transcript.duration))}
