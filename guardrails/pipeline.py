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
from typing import Any

from guardrails.base import (
    Action,
    Check,
    Finding,
    Segment,
    Severity,
    Violation,
    apply_masks,
    resolve_overlaps,
)
from guardrails.checks.model import Classify, GuardModel
from guardrails.decisions import InputDecision, OutputDecision
from guardrails.streaming import StreamSanitizer


def extract_segments(payload: Any) -> tuple[list[Segment], list[Violation]]:
    """The text of chat messages or of a completion prompt, and structure violations.

    Non-text parts (images, audio, files) carry no text to scan and are skipped. Anything
    the pipeline cannot read, token-id prompts included, is a blocking violation: text
    that cannot be checked must not pass.
    """
    if isinstance(payload, str):
        return [Segment(0, None, "user", payload)], []
    if not isinstance(payload, list):
        return [], [_structure("structure.invalid")]
    segments: list[Segment] = []
    violations: list[Violation] = []
    for index, item in enumerate(payload):
        if isinstance(item, str):
            segments.append(Segment(index, None, "user", item))
        elif isinstance(item, dict):
            _extract_message(index, item, segments, violations)
        else:
            violations.append(_structure("structure.unscannable", index))
    return segments, violations


# Content parts that carry media, not text; any other non-text part is refused.
MEDIA_PARTS = frozenset({"image_url", "input_audio", "video_url", "file"})


def _extract_message(
    index: int, message: dict[str, Any], segments: list[Segment], violations: list[Violation]
) -> None:
    role = message.get("role")
    role = role if isinstance(role, str) else ""
    content = message.get("content")
    if isinstance(content, str):
        segments.append(Segment(index, None, role, content))
    elif isinstance(content, list):
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                violations.append(_structure("structure.invalid", index, part_index))
            elif part["type"] == "text":
                text = part.get("text")
                if isinstance(text, str):
                    segments.append(Segment(index, part_index, role, text))
                else:
                    violations.append(_structure("structure.invalid", index, part_index))
            elif part["type"] not in MEDIA_PARTS:
                # A part that may carry text the checks cannot see is refused, not passed on.
                violations.append(_structure("structure.unscannable", index, part_index))
    elif content is not None:
        violations.append(_structure("structure.invalid", index))


def _structure(type_: str, message: int | None = None, part: int | None = None) -> Violation:
    return Violation(type_, "structure", Severity.MEDIUM, Action.BLOCK, "structure", message, part)


def rebuild(payload: Any, replacements: Mapping[tuple[int, int | None], str]) -> Any:
    """A copy of `payload` with masked texts put in; the input is never modified."""
    if isinstance(payload, str):
        return replacements.get((0, None), payload)
    copy: list[Any] = []
    for index, item in enumerate(payload):
        if not isinstance(item, dict):
            copy.append(replacements.get((index, None), item))
            continue
        message = dict(item)
        content = item.get("content")
        if isinstance(content, str):
            message["content"] = replacements.get((index, None), content)
        elif isinstance(content, list):
            message["content"] = [
                {**part, "text": replacements[(index, part_index)]}
                if (index, part_index) in replacements
                else (dict(part) if isinstance(part, dict) else part)
                for part_index, part in enumerate(content)
            ]
        copy.append(message)
    return copy


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
        window: int = 64,
        max_hold: int = 8192,
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
        # A deny-list phrase longer than the configured window would slip through a split.
        longest = max((getattr(check, "max_span", 0) for check in self.output_checks), default=0)
        self.window = max(window, longest + 1)
        self.max_hold = max_hold
        self.fingerprint = fingerprint
        self.version = version

    @property
    def needs_async(self) -> bool:
        """Whether the policy has model-based checks, which only `acheck_input` runs."""
        return bool(self._model_checks)

    def check_input(self, payload: Any) -> InputDecision:
        """Check chat messages or a completion prompt with the synchronous checks.

        Raises RuntimeError when the policy has model-based checks: skipping them silently
        would weaken the policy, so such policies must use `acheck_input`.
        """
        if self._model_checks:
            raise RuntimeError(
                "this policy has model-based checks; use `await pipeline.acheck_input(...)`"
            )
        started = time.perf_counter_ns()
        action, violations, replacements, _ = self._run_sync(payload)
        return self._input_decision(payload, action, violations, replacements, started)

    async def acheck_input(
        self, payload: Any, *, classify: Classify | None = None
    ) -> InputDecision:
        """Like `check_input`, then the model-based checks, concurrently, on the masked text.

        `classify(text, model)` is the gateway's callable for guard models; without one, a
        model-based check fails open or closed as its policy says.
        """
        started = time.perf_counter_ns()
        action, violations, replacements, segments = self._run_sync(payload)
        if action is not Action.BLOCK and self._model_checks:
            masked = [
                Segment(s.message, s.part, s.role, replacements.get((s.message, s.part), s.text))
                for s in segments
            ]
            results = await asyncio.gather(
                *(check.acheck(masked, classify) for check in self._model_checks)
            )
            for result in results:
                violations.extend(result)
                if any(v.action is Action.BLOCK for v in result):
                    action = Action.BLOCK
        return self._input_decision(payload, action, violations, replacements, started)

    def _run_sync(
        self, payload: Any
    ) -> tuple[Action, list[Violation], dict[tuple[int, int | None], str], list[Segment]]:
        segments, violations = extract_segments(payload)
        action = Action.BLOCK if violations else Action.ALLOW
        masks: dict[int, list[Finding]] = {}
        for check in self._sync_checks:
            if action is Action.BLOCK:
                break
            for violation in check.check_request(segments, payload):
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
        replacements: dict[tuple[int, int | None], str] = {}
        if action is not Action.BLOCK and masks:
            action = Action.MASK
            for index, findings in masks.items():
                segment = segments[index]
                replacements[(segment.message, segment.part)] = apply_masks(
                    segment.text, resolve_overlaps(findings)
                )
        return action, violations, replacements, segments

    def _input_decision(
        self,
        payload: Any,
        action: Action,
        violations: list[Violation],
        replacements: dict[tuple[int, int | None], str],
        started: int,
    ) -> InputDecision:
        messages = None if action is Action.BLOCK else rebuild(payload, replacements)
        return InputDecision(
            action=action,
            violations=tuple(violations),
            rails=self.input_rails,
            elapsed_ms=(time.perf_counter_ns() - started) / 1e6,
            policy=self.fingerprint,
            policy_version=self.version,
            messages=messages,
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

    def stream_sanitizer(self) -> StreamSanitizer:
        """A sanitizer for one streamed choice (one per choice when n > 1)."""
        return StreamSanitizer(self, window=self.window, max_hold=self.max_hold)
