"""Agent configuration: environment variables, optionally layered over a small YAML file.

Environment variables win over the file so that one image can be tuned per VM. Everything
has a default, so ``python -m agent`` with no environment serves the built-in CPU models on
127.0.0.1:8100 and reports that it is not confidential.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.credentials import CredentialError, load_public_key

ATTESTATION_PROVIDERS = ("auto", "none", "sev-snp", "tdx")
DEFAULT_TSM_PATH = "/sys/kernel/config/tsm/report"
UPSTREAM_TASKS = ("chat", "embeddings")


class ConfigError(ValueError):
    """The agent's configuration is invalid; the message says which setting."""


@dataclass(frozen=True)
class UpstreamModel:
    """A model served by the upstream runtime (vLLM, Ollama) that the agent relays to."""

    id: str
    task: str = "chat"
    upstream_id: str = ""

    @property
    def remote_id(self) -> str:
        return self.upstream_id or self.id


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to start; built by ``AgentConfig.load()`` or by tests."""

    host: str = "127.0.0.1"
    port: int = 8100
    # None means every built-in model; an empty tuple means none (attestation-only agent).
    models: tuple[str, ...] | None = None
    threads: int = 2
    tls_cert: Path | None = None
    tls_key: Path | None = None
    attestation: str = "auto"
    tsm_path: Path = Path(DEFAULT_TSM_PATH)
    upstream_url: str | None = None
    upstream_models: tuple[UpstreamModel, ...] = ()
    upstream_timeout_s: float = 600.0
    # The key the upstream runtime wants, if any (vLLM's --api-key).
    upstream_api_key: str | None = None
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "cubeai-agent")
    # Where the accepted credentials live (see agent/credentials.py), and the platform's
    # Ed25519 public key (base64) that signs provisioned ones. At least one is needed.
    credentials_file: Path | None = None
    platform_key: str | None = None
    chat_parallel: int = 4
    chat_context: int = 8192
    embedding_batch_size: int = 32

    def __post_init__(self) -> None:
        if self.attestation not in ATTESTATION_PROVIDERS:
            raise ConfigError(
                f"attestation must be one of {', '.join(ATTESTATION_PROVIDERS)}, "
                f"not {self.attestation!r}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and a key")
        if self.threads < 1 or self.chat_parallel < 1 or self.embedding_batch_size < 1:
            raise ConfigError("threads, chat_parallel and embedding_batch_size must be >= 1")
        for model in self.upstream_models:
            if model.task not in UPSTREAM_TASKS:
                raise ConfigError(
                    f"upstream model {model.id!r}: task must be one of {', '.join(UPSTREAM_TASKS)}"
                )
        if self.upstream_models and not self.upstream_url:
            raise ConfigError("upstream models are configured but no upstream URL")
        if self.platform_key is not None:
            try:
                load_public_key(self.platform_key)
            except CredentialError as exc:
                raise ConfigError(str(exc)) from None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> AgentConfig:
        """Build the configuration from ``CUBEAI_AGENT_*`` variables and the optional YAML file."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = env.get("CUBEAI_AGENT_CONFIG")
        if config_file:
            values.update(_read_yaml(Path(config_file)))
        values.update(_from_env(env))
        return cls(**values)


def _read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    values: dict[str, Any] = {}
    for key in ("host", "attestation", "upstream_url", "platform_key"):
        if key in data:
            values[key] = str(data[key])
    for key in ("port", "threads", "chat_parallel", "chat_context", "embedding_batch_size"):
        if key in data:
            values[key] = int(data[key])
    if "upstream_timeout_s" in data:
        values["upstream_timeout_s"] = float(data["upstream_timeout_s"])
    for key in ("tls_cert", "tls_key", "tsm_path", "cache_dir", "credentials_file"):
        if data.get(key):
            values[key] = Path(data[key])
    if "models" in data:
        values["models"] = tuple(str(m) for m in data["models"] or ())
    if "upstream_models" in data:
        values["upstream_models"] = tuple(
            UpstreamModel(id=str(m), task="chat")
            if isinstance(m, str)
            else UpstreamModel(
                id=str(m["id"]),
                task=str(m.get("task", "chat")),
                upstream_id=str(m.get("upstream_id", "")),
            )
            for m in data["upstream_models"] or ()
        )
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if env.get("CUBEAI_AGENT_HOST"):
        values["host"] = env["CUBEAI_AGENT_HOST"]
    for key, name in (
        ("port", "CUBEAI_AGENT_PORT"),
        ("threads", "CUBEAI_AGENT_THREADS"),
        ("chat_parallel", "CUBEAI_AGENT_CHAT_PARALLEL"),
    ):
        if env.get(name):
            try:
                values[key] = int(env[name])
            except ValueError:
                raise ConfigError(f"{name} must be an integer") from None
    if "CUBEAI_AGENT_MODELS" in env:
        values["models"] = _split(env["CUBEAI_AGENT_MODELS"])
    for key, name in (
        ("tls_cert", "CUBEAI_AGENT_TLS_CERT"),
        ("tls_key", "CUBEAI_AGENT_TLS_KEY"),
        ("tsm_path", "CUBEAI_AGENT_TSM_PATH"),
        ("cache_dir", "CUBEAI_AGENT_CACHE_DIR"),
        ("credentials_file", "CUBEAI_AGENT_CREDENTIALS_FILE"),
    ):
        if env.get(name):
            values[key] = Path(env[name])
    if env.get("CUBEAI_AGENT_ATTESTATION"):
        values["attestation"] = env["CUBEAI_AGENT_ATTESTATION"].strip().lower()
    if env.get("CUBEAI_AGENT_PLATFORM_KEY"):
        values["platform_key"] = env["CUBEAI_AGENT_PLATFORM_KEY"].strip()
    if env.get("CUBEAI_AGENT_UPSTREAM_URL"):
        values["upstream_url"] = env["CUBEAI_AGENT_UPSTREAM_URL"]
    if env.get("CUBEAI_AGENT_UPSTREAM_API_KEY"):
        values["upstream_api_key"] = env["CUBEAI_AGENT_UPSTREAM_API_KEY"]
    if env.get("CUBEAI_AGENT_UPSTREAM_MODELS"):
        values["upstream_models"] = tuple(
            _parse_upstream_model(item) for item in _split(env["CUBEAI_AGENT_UPSTREAM_MODELS"])
        )
    return values


def _split(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _parse_upstream_model(item: str) -> UpstreamModel:
    # "=" separates the task because Ollama model names already use ":" for tags.
    name, _, task = item.partition("=")
    return UpstreamModel(id=name.strip(), task=task.strip() or "chat")
