"""The runtime interfaces: one small protocol per task the agent serves.

A runtime owns loaded weights (or a connection to a model runtime in the same VM) and does
the compute; ``agent/app.py`` parses requests, picks the runtime by model id and shapes
OpenAI responses. Runtimes are loaded once at start-up and shared by all requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

TextEndpoint = Literal["chat", "completions"]


class Runtime(Protocol):
    """What every runtime has: the public model id it serves, and a way to release it."""

    model_id: str

    async def aclose(self) -> None:
        """Release weights, threads or connections."""
        ...


class TextGenerator(Runtime, Protocol):
    """Chat and text completions, taking and returning OpenAI-shaped dicts."""

    async def generate(self, endpoint: TextEndpoint, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a validated, non-streaming request with the full response object."""
        ...

    def stream(self, endpoint: TextEndpoint, request: dict[str, Any]) -> AsyncIterator[dict]:
        """Yield the chunk objects of a streaming request, usage chunk included if asked."""
        ...


@dataclass(frozen=True)
class Embeddings:
    """Unit-length vectors, one row per input, and the tokens they consumed."""

    vectors: np.ndarray
    prompt_tokens: int


class Embedder(Runtime, Protocol):
    """Text embeddings for strings or token-id lists."""

    dimensions: int

    async def embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        """Embed every input; raise ``AgentError`` for inputs the model cannot take."""
        ...


@dataclass(frozen=True)
class Word:
    """A word with its time span in seconds."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    """A transcribed segment, with the fields of OpenAI's ``verbose_json`` segments."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


@dataclass(frozen=True)
class Transcript:
    """The result of a transcription or translation."""

    text: str
    language: str
    duration: float
    segments: list[Segment]
    words: list[Word] | None = None


@dataclass(frozen=True)
class TranscriptionOptions:
    """Decoding options taken from the multipart request."""

    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False


class Transcriber(Runtime, Protocol):
    """Speech to text (and, for multilingual models, speech to English)."""

    multilingual: bool

    async def transcribe(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        on_segment: Callable[[Segment], bool] | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono float32 samples. ``on_segment`` is called (from the
        decoding thread) with each segment as it is decoded; if it returns False, decoding
        stops there (the client left)."""
        ...
