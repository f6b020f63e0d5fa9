"""Guardrail policies: the schema a domain saves, its validation, and compilation.

A policy lists input and output checks the way Django lists `AUTH_PASSWORD_VALIDATORS`:
`{"NAME": "<dotted path of a registered check>", "OPTIONS": {...}}`. Validation resolves
every NAME, validates its OPTIONS against the check's own options model (filling in
defaults, so a saved policy states every setting) and refuses unsafe admin regexes; all
problems are reported at once with their field paths. `compile_policy` builds a
`Pipeline` once per distinct policy content and reuses it, so the request path never
compiles a regex.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from guardrails.base import Stage
from guardrails.pipeline import Pipeline
from guardrails.registry import get_check_class


class CheckSpec(BaseModel):
    """One check in a policy: its registered dotted name and its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    NAME: str
    OPTIONS: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("NAME")
    @classmethod
    def _registered(cls, value: str) -> str:
        get_check_class(value)
        return value

    @field_validator("OPTIONS")
    @classmethod
    def _valid_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("NAME")
        if name is None:
            return value
        options_model = get_check_class(name).Options
        return options_model.model_validate(value).model_dump(mode="json")


class StreamSettings(BaseModel):
    """How output streams are sanitized (see `guardrails.streaming`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Characters of already-sent text kept as left context when a stream is scanned (word
    # boundaries and look-behinds of the patterns).
    window: int = Field(default=64, ge=16, le=4096)
    # A possible entity still growing (a PEM key, a long JWT) is held up to this many
    # characters; past it, it is masked conservatively (never released raw).
    max_hold: int = Field(default=16384, ge=256, le=65536)


class Policy(BaseModel):
    """A versioned guardrail policy; the platform default or one domain's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(default=1, ge=1)
    description: str = Field(default="", max_length=500)
    input: tuple[CheckSpec, ...] = ()
    output: tuple[CheckSpec, ...] = ()
    stream: StreamSettings = StreamSettings()
    # Token-id prompts and embedding inputs carry no text the checks can read: refused
    # ("block") unless the policy lets them through ("allow").
    tokenized_inputs: Literal["block", "allow"] = "block"

    @field_validator("input", "output")
    @classmethod
    def _runs_on_stage(
        cls, value: tuple[CheckSpec, ...], info: ValidationInfo
    ) -> tuple[CheckSpec, ...]:
        stage = Stage(info.field_name)
        wrong = [
            f"[{i}] {spec.NAME}"
            for i, spec in enumerate(value)
            if stage not in get_check_class(spec.NAME).stages
        ]
        if wrong:
            raise ValueError(f"checks that cannot run on {stage}: {', '.join(wrong)}")
        return value

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the whole content (version included): the compiled-pipeline cache key."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:32]


class PolicyError(ValueError):
    """A policy that cannot be saved or activated, with every problem and its field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        lines = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
        super().__init__(f"invalid guardrail policy: {lines}")


def validate_policy(data: Mapping[str, Any] | str | bytes) -> Policy:
    """Parse and validate a policy from a dict or JSON; raises `PolicyError`."""
    try:
        if isinstance(data, str | bytes):
            return Policy.model_validate_json(data)
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(
            [
                {
                    "field": ".".join(str(part) for part in error["loc"]) or "policy",
                    "message": error["msg"],
                }
                for error in exc.errors()
            ]
        ) from None


def _default_policy() -> Policy:
    return validate_policy(
        {
            "version": 1,
            "description": "Platform default",
            "input": [
                {"NAME": "guardrails.checks.structure.MessageLimits"},
                {"NAME": "guardrails.checks.unicode.UnicodeCheck"},
                {"NAME": "guardrails.checks.injection.PromptInjection"},
                {"NAME": "guardrails.checks.secrets.Secrets"},
                {"NAME": "guardrails.checks.pii.PII"},
            ],
            "output": [
                {"NAME": "guardrails.checks.secrets.Secrets"},
                {"NAME": "guardrails.checks.pii.PII"},
            ],
        }
    )


DEFAULT_POLICY = _default_policy()

_CACHE_SIZE = 256
_cache: OrderedDict[str, Pipeline] = OrderedDict()
_cache_lock = threading.Lock()


def compile_policy(policy: Policy) -> Pipeline:
    """The pipeline for `policy`, built on first use and then shared (LRU by fingerprint)."""
    key = policy.fingerprint
    with _cache_lock:
        pipeline = _cache.get(key)
        if pipeline is not None:
            _cache.move_to_end(key)
            return pipeline
    pipeline = _build(policy)
    with _cache_lock:
        _cache[key] = pipeline
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return pipeline


def _build(policy: Policy) -> Pipeline:
    def make(specs: tuple[CheckSpec, ...]) -> list[Any]:
        checks = []
        for spec in specs:
            cls = get_check_class(spec.NAME)
            checks.append(cls(cls.Options.model_validate(spec.OPTIONS)))
        return checks

    return Pipeline(
        input_checks=make(policy.input),
        output_checks=make(policy.output),
        context=policy.stream.window,
        max_hold=policy.stream.max_hold,
        tokenized_inputs=policy.tokenized_inputs,
        fingerprint=policy.fingerprint,
        version=policy.version,
    )
