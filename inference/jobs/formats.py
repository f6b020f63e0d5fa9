"""A stored transcript in the download formats: txt, srt, vtt and json."""

import orjson

FORMATS = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
}
# The OpenAI `response_format` a job was created with, as its default download format.
DEFAULT_FOR = {"json": "json", "verbose_json": "json", "text": "txt", "srt": "srt", "vtt": "vtt"}


def render(result: dict, fmt: str) -> bytes:
    segments = result.get("segments") or []
    if fmt == "json":
        return orjson.dumps(result)
    if fmt == "txt":
        return (str(result.get("text") or "").strip() + "\n").encode()
    if fmt == "srt":
        blocks = [
            f"{n}\n{_time(s['start'], ',')} --> {_time(s['end'], ',')}\n{str(s['text']).strip()}\n"
            for n, s in enumerate(segments, start=1)
        ]
        return "\n".join(blocks).encode()
    blocks = [
        f"{_time(s['start'], '.')} --> {_time(s['end'], '.')}\n{str(s['text']).strip()}\n"
        for s in segments
    ]
    return ("WEBVTT\n\n" + "\n".join(blocks)).encode()


def _time(seconds: float, separator: str) -> str:
    millis = max(0, round(float(seconds) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
