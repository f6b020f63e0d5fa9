"""A compiled policy: runs the checks on prompts and completions.

The pipeline is built once per policy by `compile_policy` and shared by every request
using that policy; it holds only precompiled checks, so calls are thread- and task-safe.
All findings of a text are located in the text as given, merged where they overlap and
applied in one pass, so offsets in violations refer to the caller's text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from guardrails.base import (
    Action,
    Check,
    Finding,
    Hold,
    Segment,
    Violation,
    apply_masks,
    resolve_overlaps,
)
from guardrails.checks.model import Classify, GuardModel
from guardrails.decisions import InputDecision, OutputDecision
from guardrails.fields import Path, request_segments, with_texts
from guardrails.streaming import StreamSanitizer

# The request keys that `check_input` accepts a bare chat conversation or prompt under.
_BARE = {"chat": "messages", "completion": "prompt"}


def _violation(
    finding: Finding, rail: str, segment: Segment | None = None, offset: int = 0
) -> Violation:
    return Violation(
        type=finding.type,
        category=finding.category,
        severity=finding.severity,
        action=finding.action,
        rail=rail,
        message=segment.message if segment else None,
        part=segment.part if segment else None,
        field=segment.field if segment else None,
        start=finding.start + offset,
        end=finding.end + offset,
    )


class Pipeline:
    """Input and output checks of one policy, ready to run."""

    def __init__(
        self,
        *,
        input_checks: Sequence[Check],
        output_checks: Sequence[Check],
        context: int = 64,
        max_hold: int = 8192,
        tokenized_inputs: str = "block",
        fingerprint: str = "",
        version: int = 0,
    ) -> None:
        self.input_checks = tuple(input_checks)
        self.output_checks = tuple(output_checks)
        self._sync_checks = tuple(check for check in self.input_checks if not check.is_async)
        self._model_checks = tuple(
            check for check in self.input_checks if isinstance(check, GuardModel)
        )
        self.input_rails = tuple(dict.fromkeys(check.name for check in self.input_checks))
        self.output_rails = tuple(dict.fromkeys(check.name for check in self.output_checks))
        self.context = context
        self.max_hold = max_hold
        self.tokenized_inputs = tokenized_inputs
        self.fingerprint = fingerprint
        self.version = version

    @property
    def needs_async(self) -> bool:
        """Whether the policy has model-based checks, which only `acheck_input` runs."""
        return bool(self._model_checks)

    def check_request(self, kind: str, payload: Mapping[str, Any]) -> InputDecision:
        """Check every text of a request (`guardrails.fields` lists them) with the
        synchronous checks; `kind` is chat, completion, embedding or audio.

        Raises RuntimeError when the policy has model-based checks: skipping them silently
        would weaken the policy, so such policies must use `acheck_request`.
        """
        if self._model_checks:
            raise RuntimeError(
                "this policy has model-based checks; use `await pipeline.acheck_request(...)`"
            )
        started = time.perf_counter_ns()
        action, violations, texts, _ = self._run_sync(kind, payload)
        return self._input_decision(payload, action, violations, texts, started)

    async def acheck_request(
        self, kind: str, payload: Mapping[str, Any], *, classify: Classify | None = None
    ) -> InputDecision:
        """Like `check_request`, then the model-based checks, concurrently, on the masked text.

        `classify(text, model)` is the gateway's callable for guard models; without one, a
        model-based check fails open or closed as its policy says.
        """
        started = time.perf_counter_ns()
        action, violations, texts, segments = self._run_sync(kind, payload)
        if action is not Action.BLOCK and self._model_checks:
            masked = [replace(s, text=texts.get(s.path, s.text)) for s in segments]
            results = await asyncio.gather(
                *(check.acheck(masked, classify) for check in self._model_checks)
            )
            for result in results:
                violations.extend(result)
                if any(v.action is Action.BLOCK for v in result):
                    action = Action.BLOCK
        return self._input_decision(payload, action, violations, texts, started)

    def check_input(self, payload: Any) -> InputDecision:
        """`check_request` for a bare chat conversation (a list of messages) or a completion
        prompt; the decision's `payload` is then the masked conversation or prompt."""
        kind = _bare_kind(payload)
        decision = self.check_request(kind, {_BARE[kind]: payload})
        return _unwrap(decision, kind)

    async def acheck_input(
        self, payload: Any, *, classify: Classify | None = None
    ) -> InputDecision:
        """`acheck_request` for a bare chat conversation or completion prompt."""
        kind = _bare_kind(payload)
        decision = await self.acheck_request(kind, {_BARE[kind]: payload}, classify=classify)
        return _unwrap(decision, kind)

    def _run_sync(
        self, kind: str, payload: Mapping[str, Any]
    ) -> tuple[Action, list[Violation], dict[Path, str], list[Segment]]:
        segments, violations = request_segments(
            kind, payload, tokenized_inputs=self.tokenized_inputs
        )
        action = Action.BLOCK if violations else Action.ALLOW
        raw = payload.get(_BARE.get(kind, "input" if kind == "embedding" else "prompt"))
        masks: dict[int, list[Finding]] = {}
        for check in self._sync_checks:
            if action is Action.BLOCK:
                break
            for violation in check.check_request(segments, raw):
                violations.append(violation)
                if violation.action is Action.BLOCK:
                    action = Action.BLOCK
            for index, segment in enumerate(segments):
                if check.roles is not None and segment.role not in check.roles:
                    continue
                for finding in check.scan(segment.text):
                    violations.append(_violation(finding, check.name, segment))
                    if finding.action is Action.BLOCK:
                        action = Action.BLOCK
                    elif finding.action is Action.MASK:
                        masks.setdefault(index, []).append(finding)
        texts: dict[Path, str] = {}
        if action is not Action.BLOCK and masks:
            action = Action.MASK
            for index, findings in masks.items():
                segment = segments[index]
                texts[segment.path] = apply_masks(segment.text, resolve_overlaps(findings))
        return action, violations, texts, segments

    def _input_decision(
        self,
        payload: Mapping[str, Any],
        action: Action,
        violations: list[Violation],
        texts: dict[Path, str],
        started: int,
    ) -> InputDecision:
        return InputDecision(
            action=action,
            violations=tuple(violations),
            rails=self.input_rails,
            elapsed_ms=(time.perf_counter_ns() - started) / 1e6,
            policy=self.fingerprint,
            policy_version=self.version,
            payload=None if action is Action.BLOCK else with_texts(payload, texts),
        )

    def scan_output(self, text: str) -> list[tuple[Finding, str]]:
        """Every output finding in `text` with the rail that made it (used by streams too)."""
        return [
            (finding, check.name) for check in self.output_checks for finding in check.scan(text)
        ]

    def check_output(self, text: str) -> OutputDecision:
        """Check a whole completion: masked text, or None with a block."""
        started = time.perf_counter_ns()
        found = self.scan_output(text)
        violations = tuple(_violation(finding, rail) for finding, rail in found)
        if any(finding.action is Action.BLOCK for finding, _ in found):
            action, masked = Action.BLOCK, None
        else:
            masks = [finding for finding, _ in found if finding.action is Action.MASK]
            action = Action.MASK if masks else Action.ALLOW
            masked = apply_masks(text, resolve_overlaps(masks)) if masks else text
        return OutputDecision(
            action=action,
            violations=violations,
            rails=self.output_rails,
            elapsed_ms=(time.perf_counter_ns() - started) / 1e6,
            policy=self.fingerprint,
            policy_version=self.version,
            text=masked,
        )

    def hold_output(self, text: str) -> Hold:
        """Where a stream must hold `text` back: the earliest place an output check says an
        entity may have begun without being complete yet (`len(text)` when none)."""
        hold = Hold(len(text))
        for check in self.output_checks:
            candidate = check.hold(text)
            if candidate.index < hold.index:
                hold = candidate
        return hold

    def stream_sanitizer(self) -> StreamSanitizer:
        """A sanitizer for one streamed text (one per choice and field)."""
        return StreamSanitizer(self, context=self.context, max_hold=self.max_hold)


def _bare_kind(payload: Any) -> str:
    is_messages = isinstance(payload, list) and any(isinstance(item, dict) for item in payload)
    return "chat" if is_messages else "completion"


def _unwrap(decision: InputDecision, kind: str) -> InputDecision:
    payload = decision.payload[_BARE[kind]] if decision.payload is not None else None
    return replace(decision, payload=payload)
