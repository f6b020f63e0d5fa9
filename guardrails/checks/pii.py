"""Personal data: emails, phone numbers, payment cards, IBANs, national ids and IP addresses.

Each entity is found in two steps: a precompiled regex proposes candidate spans, then a
validator confirms them (Luhn for cards, the ISO 13616 checksum for IBANs, python-stdnum
for national ids, phonenumbers for phones, `ipaddress` for IPs). The expensive
validators only ever see candidates, never the whole text.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator
from importlib import import_module
from typing import ClassVar

import phonenumbers
import regex
from pydantic import Field, field_validator
from stdnum import iban as stdnum_iban
from stdnum import luhn

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

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "national_id": "[NATIONAL_ID]",
    "ip": "[IP]",
}

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
# Digit groups with single spaces or dashes; the guards stop a candidate from starting or
# ending inside a longer group of digits.
_CARD = re.compile(r"(?<![\d])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![\d])(?![ -]\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_PHONE = re.compile(
    r"(?<![\w+(])(?<!\d[ .-])(?:(?:\+|00)\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){5,15}"
    r"(?![\w])(?![ .-]\d)"
)
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d]|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# One pass finds every number-like run worth a closer look: six or more digits with short
# separators (and a single letter, as in Finnish and Spanish ids), or a dotted quad. Card,
# phone, IBAN and id patterns then run only in a small window around each run, which keeps
# prose full of short numbers and dates cheap. `[0-9]` rather than `\d` lets the engine
# skip ahead on its first-character set.
# Every Unicode decimal digit outside ASCII, mapped to its ASCII digit.
_DECIMAL_DIGITS = {
    code: str(unicodedata.decimal(chr(code)))
    for code in range(0x80, sys.maxunicode + 1)
    if unicodedata.category(chr(code)) == "Nd"
}
_RUN = re.compile(r"[0-9](?:[ ().\-/]{0,2}[A-Z]?[0-9]){5,}+[A-Z]?|[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
# Text before a run that can belong to the entity: "+44 ", "(", an IBAN's "GB82WEST".
_BEFORE = 12
# Text after a run that can belong to it: an IBAN that ends in letters.
_AFTER = 20
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")

# National ids with a checksum (or, for US SSNs, strict structure rules) in python-stdnum:
# the written shape that proposes candidates, the validator, and its fewest digits.
NATIONAL_IDS: dict[str, tuple[str, str, int]] = {
    # Italian fiscal codes are mostly letters, so they need a pass over the whole text.
    "us.ssn": (r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])", "stdnum.us.ssn", 9),
    "br.cpf": (r"(?<![\d.])\d{3}\.\d{3}\.\d{3}-\d{2}(?!\d)", "stdnum.br.cpf", 11),
    "es.dni": (r"(?<![A-Za-z0-9])\d{8}-?[A-Z](?![A-Za-z0-9])", "stdnum.es.dni", 8),
    "it.codicefiscale": (
        r"(?<![A-Za-z0-9])[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z](?![A-Za-z0-9])",
        "stdnum.it.codicefiscale",
        0,
    ),
    "fi.hetu": (r"(?<![\w-])\d{6}[-+A-FU-Y]\d{3}[0-9A-Y](?![\w])", "stdnum.fi.hetu", 9),
    "se.personnummer": (
        r"(?<![\d-])(?:\d{2})?\d{6}[-+]\d{4}(?![\d])",
        "stdnum.se.personnummer",
        10,
    ),
    "pl.pesel": (r"(?<!\d)\d{11}(?!\d)", "stdnum.pl.pesel", 11),
    "in.aadhaar": (r"(?<![\d ])[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}(?![\d])", "stdnum.in_.aadhaar", 12),
    "fr.nir": (
        r"(?<!\d)[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?!\d)",
        "stdnum.fr.nir",
        13,
    ),
    "cn.ric": (r"(?<![\dX])\d{17}[\dX](?![\dX])", "stdnum.cn.ric", 17),
    "nl.bsn": (r"(?<!\d)\d{4}\.?\d{2}\.?\d{3}(?!\d)", "stdnum.nl.bsn", 9),
}
# Ids that the number-run prefilter cannot propose.
FULL_SCAN_IDS = frozenset({"it.codicefiscale"})
# Opt-in: nine-digit BSNs collide with other numbers; fiscal codes cost a full pass.
DEFAULT_NATIONAL_IDS = tuple(
    code for code in NATIONAL_IDS if code not in {"nl.bsn", "it.codicefiscale"}
)


def card_ok(candidate: str) -> bool:
    """Luhn-valid, 13 to 19 digits, and an issuer prefix that payment networks use."""
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits)


def iban_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The longest valid IBAN at `start` within the candidate, trimming trailing groups.

    The candidate regex may swallow a following upper-case word ("... 3000 AND"), so the
    candidate is shortened at spaces until the checksum and country format verify.
    """
    while end - start >= 15:
        if stdnum_iban.is_valid(text[start:end]):
            return start, end
        space = text.rfind(" ", start, end)
        if space <= start:
            return None
        end = space
    return None


class PIIOptions(CheckOptions):
    email: Action = Action.MASK
    phone: Action = Action.MASK
    card: Action = Action.MASK
    iban: Action = Action.MASK
    national_id: Action = Action.MASK
    ip: Action = Action.MASK
    # Numbers written without a country code are tried in these regions, in order.
    phone_regions: tuple[str, ...] = Field(default=("US",), max_length=8)
    national_ids: tuple[str, ...] = DEFAULT_NATIONAL_IDS
    # Loopback, private and documentation ranges say nothing about a person.
    ip_public_only: bool = True

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [region for region in value if region not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}")
        return value

    @field_validator("national_ids")
    @classmethod
    def _known_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(NATIONAL_IDS))
        if unknown:
            raise ValueError(f"unknown national ids {unknown}; known: {sorted(NATIONAL_IDS)}")
        return value


class PII(Check):
    """Masks (or blocks on) personal data, with typed placeholders such as `[EMAIL]`."""

    name = "pii"
    Options: ClassVar[type[CheckOptions]] = PIIOptions
    stages = frozenset({Stage.INPUT, Stage.OUTPUT})

    def __init__(self, options: CheckOptions) -> None:
        super().__init__(options)
        opts: PIIOptions = options  # type: ignore[assignment]
        self._opts = opts
        ids = [
            (
                code,
                re.compile(NATIONAL_IDS[code][0]),
                import_module(NATIONAL_IDS[code][1]).is_valid,
                NATIONAL_IDS[code][2],
            )
            for code in opts.national_ids
        ]
        self._run_ids = [
            (pattern, is_valid, digits)
            for code, pattern, is_valid, digits in ids
            if code not in FULL_SCAN_IDS
        ]
        self._full_ids = [
            (pattern, is_valid) for code, pattern, is_valid, _ in ids if code in FULL_SCAN_IDS
        ]
        numeric = (opts.card, opts.iban, opts.national_id, opts.phone, opts.ip)
        self._numbers = any(action is not Action.ALLOW for action in numeric)
        # Where an entity may begin, for streams: each candidate pattern with what masking
        # (or blocking) it would lead to. A number run may turn out to be any numeric entity.
        strictest = max(numeric, key=lambda action: action.rank)
        candidates = [
            (_EMAIL, "[EMAIL]", opts.email),
            (_IPV6, "[IP]", opts.ip),
            (_IBAN, "[IBAN]", opts.iban),
            (_PHONE, "[PHONE]", opts.phone),
            (_RUN, "[PII]", strictest),
        ]
        candidates += [
            (pattern, "[NATIONAL_ID]", opts.national_id) for pattern, _ in self._full_ids
        ]
        self._holds = [
            (regex.compile(pattern.pattern), replacement, action)
            for pattern, replacement, action in candidates
            if action is not Action.ALLOW
        ]

    def hold(self, text: str) -> Hold:
        if not text.isascii():
            text = text.translate(_DECIMAL_DIGITS)
        return hold_by_patterns(text, self._holds)

    def scan(self, text: str) -> list[Finding]:
        opts = self._opts
        findings: list[Finding] = []
        if not text.isascii():
            # A card in Arabic-Indic or full-width digits is still a card. One character
            # maps to one, so every offset found still points into the original text.
            text = text.translate(_DECIMAL_DIGITS)
        if opts.email is not Action.ALLOW:
            self._scan_emails(text, findings)
        if opts.ip is not Action.ALLOW and text.count(":") >= 2:
            self._check_ips(_IPV6.finditer(text), findings)
        if opts.national_id is not Action.ALLOW:
            for pattern, is_valid in self._full_ids:
                self._check_ids(pattern.finditer(text), is_valid, findings)
        if self._numbers:
            seen: set[tuple[int, int, str]] = set()
            size = len(text)
            for run in _RUN.finditer(text):
                digits = sum(char.isdigit() for char in run.group())
                window = (max(0, run.start() - _BEFORE), min(size, run.end() + _AFTER))
                self._scan_window(text, window, digits, "." in run.group(), findings, seen)
        return findings

    def _scan_emails(self, text: str, findings: list[Finding]) -> None:
        # The email regex runs only around each "@", never over the whole text.
        at = text.find("@")
        resume = 0
        while at != -1:
            for match in _EMAIL.finditer(text, max(resume, at - 64), min(len(text), at + 256)):
                findings.append(
                    self._finding(
                        match.start(), match.end(), "email", Severity.MEDIUM, self._opts.email
                    )
                )
                resume = match.end()
            at = text.find("@", max(at + 1, resume))

    def _scan_window(
        self,
        text: str,
        window: tuple[int, int],
        digits: int,
        dotted: bool,
        findings: list[Finding],
        seen: set[tuple[int, int, str]],
    ) -> None:
        """Validate the entities a number run can hold, judged by its digit count.

        A run may join several entities ("card  card"), so only the minimum size of each
        entity is used to skip validators.
        """
        opts = self._opts
        pos, endpos = window
        found: list[Finding] = []
        if opts.ip is not Action.ALLOW and dotted:
            self._check_ips(_IPV4.finditer(text, pos, endpos), found)
        if opts.card is not Action.ALLOW and digits >= 13:
            for match in _CARD.finditer(text, pos, endpos):
                if card_ok(match.group()):
                    found.append(
                        self._finding(match.start(), match.end(), "card", Severity.HIGH, opts.card)
                    )
        if opts.iban is not Action.ALLOW:
            for match in _IBAN.finditer(text, pos, endpos):
                span = iban_span(text, match.start(), match.end())
                if span is not None:
                    found.append(self._finding(span[0], span[1], "iban", Severity.HIGH, opts.iban))
        if opts.national_id is not Action.ALLOW:
            for pattern, is_valid, sizes in self._run_ids:
                if digits >= sizes:
                    self._check_ids(pattern.finditer(text, pos, endpos), is_valid, found)
        if opts.phone is not Action.ALLOW and digits >= 7:
            for match in _PHONE.finditer(text, pos, endpos):
                if self._phone_ok(match.group()):
                    found.append(
                        self._finding(
                            match.start(), match.end(), "phone", Severity.MEDIUM, opts.phone
                        )
                    )
        # Windows of neighbouring runs overlap; report each entity once.
        for finding in found:
            key = (finding.start, finding.end, finding.type)
            if key not in seen:
                seen.add(key)
                findings.append(finding)

    def _check_ids(
        self,
        matches: Iterator[re.Match[str]],
        is_valid: Callable[[str], bool],
        findings: list[Finding],
    ) -> None:
        for match in matches:
            if is_valid(match.group()):
                findings.append(
                    self._finding(
                        match.start(),
                        match.end(),
                        "national_id",
                        Severity.HIGH,
                        self._opts.national_id,
                    )
                )

    def _check_ips(self, matches: Iterator[re.Match[str]], findings: list[Finding]) -> None:
        for match in matches:
            try:
                address = ipaddress.ip_address(match.group())
            except ValueError:
                continue
            if self._opts.ip_public_only and not address.is_global:
                continue
            findings.append(
                self._finding(match.start(), match.end(), "ip", Severity.LOW, self._opts.ip)
            )

    def _phone_ok(self, candidate: str) -> bool:
        digits = sum(char.isdigit() for char in candidate)
        if not 7 <= digits <= 15 or _DATE.fullmatch(candidate):
            return False
        international = candidate.startswith(("+", "00"))
        for region in (None,) if international else self._opts.phone_regions:
            try:
                number = phonenumbers.parse(
                    "+" + candidate[2:] if candidate.startswith("00") else candidate, region
                )
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return True
        return False

    @staticmethod
    def _finding(start: int, end: int, entity: str, severity: Severity, action: Action) -> Finding:
        return Finding(start, end, f"pii.{entity}", "pii", severity, action, PLACEHOLDERS[entity])
