"""Credentials: cloud and SaaS API keys, tokens, private keys, and our own PATs.

Every rule starts from a literal (a vendor prefix or a keyword), so a cheap substring test
skips the regex for text that cannot contain that kind of secret. Formats follow the
vendors' documentation and the detect-secrets plugins; lengths are bounded so that a
stream holds a growing match for a bounded number of characters.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import regex
from pydantic import field_validator

from guardrails.base import (
    Action,
    Check,
    CheckOptions,
    Finding,
    Hold,
    Severity,
    Stage,
    hold_by_patterns,
)

PLACEHOLDER = "[SECRET]"

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def cube_pat_checksum_ok(token: str) -> bool:
    """Whether a `cube_pat_<keyid>_<secret><crc>` token carries a valid CRC32.

    Mirrors `tokens.keys` (which needs Django) so this package stays importable alone:
    the last six characters are the base62 CRC32 of everything before them.
    """
    body, crc = token[:-6], token[-6:]
    number = zlib.crc32(body.encode())
    digits = []
    for _ in range(6):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits)) == crc


@dataclass(frozen=True, slots=True)
class SecretRule:
    """One kind of secret: a pattern, the literals that must occur first, what to mask."""

    type: str
    pattern: re.Pattern[str]
    literals: tuple[str, ...]
    severity: Severity = Severity.HIGH
    # Literals are searched in the lower-cased text when the rule is case-insensitive.
    lower: bool = False
    # Capture group to mask (0 = the whole match), e.g. only the value of `password=...`.
    group: int = 0
    # Upgrades the severity when the secret verifies (a checksum), else keeps it.
    verify: Callable[[str], bool] | None = None


_END = r"(?![A-Za-z0-9_-])"

RULES: tuple[SecretRule, ...] = (
    SecretRule(
        "secret.cube_pat",
        re.compile(r"(?<![A-Za-z0-9_])cube_pat_[0-9A-Za-z]{10}_[0-9A-Za-z]{38}(?![0-9A-Za-z])"),
        ("cube_pat_",),
        verify=cube_pat_checksum_ok,
    ),
    SecretRule(
        "secret.private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:\s+[A-Za-z0-9+/=]{16,})*+"
            r"(?:\s*-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)?"
        ),
        ("PRIVATE KEY",),
        Severity.CRITICAL,
    ),
    SecretRule(
        "secret.aws_access_key",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Z0-9])"),
        ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
    ),
    SecretRule(
        "secret.aws_secret_key",
        re.compile(
            r"aws[\w.-]{0,20}secret[\w.-]{0,20}[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
            re.IGNORECASE,
        ),
        ("secret",),
        lower=True,
        group=1,
    ),
    SecretRule(
        "secret.github",
        re.compile(
            r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,251})"
            + _END
        ),
        ("gh", "github_pat_"),
    ),
    SecretRule(
        "secret.gitlab",
        re.compile(r"(?<![A-Za-z0-9_])glpat-[A-Za-z0-9_-]{20,64}" + _END),
        ("glpat-",),
    ),
    SecretRule(
        "secret.slack",
        re.compile(
            r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,250}"
            r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,200}"
        ),
        ("xox", "hooks.slack.com"),
    ),
    SecretRule(
        "secret.stripe",
        re.compile(r"(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,247}(?![A-Za-z0-9])"),
        ("_live_", "_test_"),
    ),
    SecretRule(
        "secret.anthropic",
        re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,250}" + _END),
        ("sk-ant-",),
    ),
    SecretRule(
        "secret.openai",
        # Random keys mix digits and capitals; the look-aheads keep "sk-learn-..." words out.
        re.compile(
            r"(?<![A-Za-z0-9_-])sk-(?=[A-Za-z0-9_-]{0,250}[0-9])(?=[A-Za-z0-9_-]{0,250}[A-Z])"
            r"(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}" + _END
        ),
        ("sk-",),
    ),
    SecretRule(
        "secret.google_api_key",
        re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}" + _END),
        ("AIza",),
    ),
    SecretRule(
        "secret.huggingface",
        re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,40}(?![A-Za-z0-9])"),
        ("hf_",),
    ),
    SecretRule(
        "secret.npm",
        re.compile(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
        ("npm_",),
    ),
    SecretRule(
        "secret.sendgrid",
        re.compile(r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}" + _END),
        ("SG.",),
    ),
    SecretRule(
        "secret.twilio",
        re.compile(r"(?<![A-Za-z0-9])SK[0-9a-f]{32}(?![A-Za-z0-9])"),
        ("SK",),
        Severity.MEDIUM,
    ),
    SecretRule(
        "secret.jwt",
        re.compile(
            r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,1000}"
            + _END
        ),
        ("eyJ",),
        Severity.MEDIUM,
    ),
    SecretRule(
        "secret.url_password",
        re.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,64}:([^\s:/@]{3,128})@", re.IGNORECASE),
        ("://",),
        Severity.MEDIUM,
        group=1,
    ),
    SecretRule(
        "secret.generic",
        # A credential-named key assigned a value that looks random (letters and digits),
        # so `api_key = os.environ["KEY"]` and `password: str` stay untouched.
        re.compile(
            r"(?<![A-Za-z])(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
            r"[\"']?\s*[:=]\s*[\"']?"
            r"((?=[A-Za-z0-9_\-+/=!@#$%^&*]{0,200}[0-9])(?=[A-Za-z0-9_\-+/=!@#$%^&*]{0,200}[A-Za-z])"
            r"[A-Za-z0-9_\-+/=!@#$%^&*]{8,200})(?![A-Za-z0-9_\-+/=!@#$%^&*])",
            re.IGNORECASE,
        ),
        ("pass", "pwd", "secret", "key", "token"),
        Severity.MEDIUM,
        lower=True,
        group=1,
    ),
)

SECRET_TYPES = tuple(rule.type for rule in RULES)


class SecretsOptions(CheckOptions):
    action: Action = Action.MASK
    # Per-type overrides of `action`, e.g. {"secret.private_key": "block"}; "allow" disables.
    actions: dict[str, Action] = {}

    @field_validator("actions")
    @classmethod
    def _known_types(cls, value: dict[str, Action]) -> dict[str, Action]:
        unknown = sorted(set(value) - set(SECRET_TYPES))
        if unknown:
            raise ValueError(f"unknown secret types {unknown}; known: {list(SECRET_TYPES)}")
        return value


class Secrets(Check):
    """Masks (or blocks on) API keys, tokens, private keys and PATs, as `[SECRET]`."""

    name = "secrets"
    Options: ClassVar[type[CheckOptions]] = SecretsOptions
    stages = frozenset({Stage.INPUT, Stage.OUTPUT})

    def __init__(self, options: CheckOptions) -> None:
        super().__init__(options)
        opts: SecretsOptions = options  # type: ignore[assignment]
        self._rules = [
            (rule, opts.actions.get(rule.type, opts.action))
            for rule in RULES
            if opts.actions.get(rule.type, opts.action) is not Action.ALLOW
        ]
        # The same patterns in the `regex` package, whose partial matching tells a stream
        # where a secret may have begun.
        self._holds = [
            (regex.compile(rule.pattern.pattern, rule.pattern.flags), PLACEHOLDER, action)
            for rule, action in self._rules
        ]

    def hold(self, text: str) -> Hold:
        return hold_by_patterns(text, self._holds)

    def scan(self, text: str) -> list[Finding]:
        findings: list[Finding] = []
        lowered: str | None = None
        for rule, action in self._rules:
            if rule.lower:
                if lowered is None:
                    lowered = text.lower()
                haystack = lowered
            else:
                haystack = text
            if not any(literal in haystack for literal in rule.literals):
                continue
            for match in rule.pattern.finditer(text):
                severity = rule.severity
                if rule.verify is not None and rule.verify(match.group()):
                    severity = Severity.CRITICAL
                start, end = match.span(rule.group)
                findings.append(
                    Finding(start, end, rule.type, "secret", severity, action, PLACEHOLDER)
                )
        return findings
