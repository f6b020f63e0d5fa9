"""Prometheus metrics of one agent, on a registry of its own (several agents can share a
process in tests without clashing). Labels carry model ids and outcomes, never content."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class AgentMetrics:
    """The counters, histograms and gauges ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cubeai_agent_requests",
            "Requests handled, by endpoint, model and HTTP status.",
            ["endpoint", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cubeai_agent_request_seconds",
            "Time to the full response (streams: to the last chunk).",
            ["endpoint", "model"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.first_token = Histogram(
            "cubeai_agent_time_to_first_token_seconds",
            "Time to the first streamed chunk with content.",
            ["endpoint", "model"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.tokens = Counter(
            "cubeai_agent_tokens",
            "Tokens processed, by model and kind (prompt or completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            "cubeai_agent_audio_seconds",
            "Seconds of audio transcribed or translated.",
            ["model"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "cubeai_agent_requests_in_flight",
            "Requests being handled now.",
            registry=self.registry,
        )
        self.refused = Counter(
            "cubeai_agent_refused_requests",
            "Requests refused for a missing or wrong credential.",
            registry=self.registry,
        )
        self.info = Info("cubeai_agent", "Agent build and attestation.", registry=self.registry)

    def count_usage(self, model: str, usage: dict | None) -> None:
        if not usage:
            return
        self.tokens.labels(model, "prompt").inc(int(usage.get("prompt_tokens") or 0))
        self.tokens.labels(model, "completion").inc(int(usage.get("completion_tokens") or 0))
