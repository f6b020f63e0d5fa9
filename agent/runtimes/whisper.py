"""Speech to text with faster-whisper (CTranslate2).

Decoding runs at ``temperature=0.0`` by default: faster-whisper's fallback ladder of
temperatures made the small models several times slower and produced garbage on clean
speech. CTranslate2 runs one request at a time per model, so calls go through a small pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel

from agent.errors import invalid_request
from agent.runtimes import Segment, Transcript, TranscriptionOptions, Word


class WhisperRuntime:
    """A Whisper model in CTranslate2 format."""

    def __init__(self, model_id: str, model_dir: Path, *, multilingual: bool, threads: int) -> None:
        self.model_id = model_id
        self.multilingual = multilingual
        self._model = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"whisper-{model_id}")

    async def transcribe(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        on_segment: Callable[[Segment], bool] | None = None,
    ) -> Transcript:
        if not self.multilingual:
            if options.task == "translate":
                raise invalid_request(
                    f"The model '{self.model_id}' is English-only and cannot translate; "
                    "use a multilingual model such as 'whisper-base'.",
                    param="model",
                )
            if options.language not in (None, "en"):
                raise invalid_request(
                    f"The model '{self.model_id}' only transcribes English; use a "
                    "multilingual model such as 'whisper-base' for language "
                    f"'{options.language}'.",
                    param="language",
                )
        if options.language is not None and options.language not in self._languages():
            raise invalid_request(
                f"Unsupported language '{options.language}'; use an ISO-639-1 code such as 'de'.",
                param="language",
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, audio, options, on_segment)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _languages(self) -> set[str]:
        return set(self._model.supported_languages)

    def _run(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        on_segment: Callable[[Segment], bool] | None = None,
    ) -> Transcript:
        segments_iter, info = self._model.transcribe(
            audio,
            task=options.task,
            language=options.language or (None if self.multilingual else "en"),
            initial_prompt=options.prompt or None,
            temperature=options.temperature,
            beam_size=5,
            word_timestamps=options.word_timestamps,
            vad_filter=False,
        )
        segments: list[Segment] = []
        words: list[Word] = []
        for s in segments_iter:
            segment = Segment(
                id=len(segments),
                seek=s.seek,
                start=round(float(s.start), 3),
                end=round(float(s.end), 3),
                text=s.text,
                tokens=list(s.tokens),
                temperature=float(s.temperature or 0.0),
                avg_logprob=float(s.avg_logprob),
                compression_ratio=float(s.compression_ratio),
                no_speech_prob=float(s.no_speech_prob),
            )
            segments.append(segment)
            words.extend(
                Word(
                    word=w.word.strip(), start=round(float(w.start), 3), end=round(float(w.end), 3)
                )
                for w in s.words or ()
            )
            # faster-whisper decodes lazily, segment by segment: stopping the loop stops it.
            if on_segment is not None and not on_segment(segment):
                break
        language = "english" if options.task == "translate" else info.language
        return Transcript(
            text="".join(s.text for s in segments).strip(),
            language=_language_name(language),
            duration=round(float(info.duration), 3),
            segments=segments,
            words=words if options.word_timestamps else None,
        )


def _language_name(code: str) -> str:
    # OpenAI's verbose_json names the language in full ("english"); Whisper gives the code.
    # Common languages are named, the others keep their ISO code.
    return _LANGUAGE_NAMES.get(code, code)


_LANGUAGE_NAMES = {
    "en": "english",
    "english": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
    "pl": "polish",
    "ru": "russian",
    "ja": "japanese",
    "zh": "chinese",
    "ko": "korean",
}
