"""Invisible characters, control characters and Unicode look-alike tricks.

Attackers hide instructions in characters a reviewer cannot see (Unicode tag characters,
long runs of variation selectors), reorder text with bidirectional overrides, split
keywords with zero-width characters, or write Latin words with Cyrillic and Greek
look-alikes. Masking removes the invisible characters and spells look-alike words in
Latin; tag smuggling blocks by default because it has no legitimate use in a prompt.
`normalize_for_matching` applies the same clean-up for other checks' pattern matching.
"""

from __future__ import annotations

import re
import unicodedata
from typing import ClassVar

from guardrails.base import Action, Check, CheckOptions, Finding, Hold, Severity, Stage

# Tag characters (U+E0000-E007F) encode ASCII invisibly; long runs of variation selectors
# encode bytes the same way ("emoji smuggling"); a single selector after an emoji is normal.
# One use of tags is legitimate: a subdivision flag (Scotland is U+1F3F4, the tags g b s c
# t, then CANCEL TAG), so a tag run that forms such a flag is not a finding.
_TAGS = re.compile("[\U000e0000-\U000e007f]+|[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}")
_FLAG_TAGS = re.compile("[\U000e0030-\U000e0039\U000e0061-\U000e007a]{2,6}\U000e007f")
_BLACK_FLAG = "\U0001f3f4"
# What a stream holds back until it is whole: a black flag or tag run at the very end (a
# flag, or smuggled text, still arriving), or a word that may be spelled with look-alikes.
_TAIL = re.compile(
    f"(?:{_BLACK_FLAG}?[\U000e0000-\U000e007f]*|[\ufe00-\ufe0f\U000e0100-\U000e01ef]+)\\Z"
)
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]+")
# Zero-width joiners are part of emoji sequences and of Persian and Indic spelling, so they
# count as tricks only inside ASCII words; the others are invisible everywhere.
_INVISIBLE = re.compile(
    "[\u200b\u2060-\u2064\ufeff\u00ad\u180e\u034f\u115f\u1160\u3164\uffa0]+"
    "|(?<=[A-Za-z0-9])[\u200c\u200d\ufe00-\ufe0f]+(?=[A-Za-z0-9])"
)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]+")

_CONFUSABLES = {
    "а": "a", "в": "B", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
    "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ɡ": "g", "А": "A", "В": "B",
    "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X",
    "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i",
    "κ": "k", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}  # fmt: skip
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)
_CONFUSABLE_CLASS = "".join(sorted(_CONFUSABLES))
_CONFUSABLE_CHAR = re.compile(f"[{_CONFUSABLE_CLASS}]")
_LATIN_CHAR = re.compile("[A-Za-z]")
# Candidate words for the mixed-script test: letters from either set, matched possessively
# so a long run of letters costs linear time.
_WORD = re.compile(f"[A-Za-z{_CONFUSABLE_CLASS}]++")
_WORD_TAIL = re.compile(f"[A-Za-z{_CONFUSABLE_CLASS}]+\\Z")
_HIDDEN = re.compile(f"{_TAGS.pattern}|{_BIDI.pattern}|{_INVISIBLE.pattern}|{_CONTROL.pattern}")


def _is_flag(text: str, match: re.Match[str]) -> bool:
    """Whether a run of tag characters is the tail of a subdivision flag emoji."""
    return text[match.start() - 1 : match.start()] == _BLACK_FLAG and bool(
        _FLAG_TAGS.fullmatch(match.group())
    )


def normalize_for_matching(text: str) -> str:
    """The text as a reader sees it: no hidden characters, NFKC, look-alikes in Latin.

    Used before pattern matching only; offsets into the result do not map to the input.
    """
    if text.isascii():
        return _CONTROL.sub("", text) if _CONTROL.search(text) else text
    cleaned = _HIDDEN.sub("", unicodedata.normalize("NFKC", text))
    return cleaned.translate(_CONFUSABLE_TABLE)


class UnicodeOptions(CheckOptions):
    tags: Action = Action.BLOCK
    bidi: Action = Action.MASK
    invisible: Action = Action.MASK
    control: Action = Action.MASK
    homoglyphs: Action = Action.MASK


class UnicodeCheck(Check):
    """Finds hidden characters (masked by removal) and look-alike spellings (masked in Latin)."""

    name = "unicode"
    Options: ClassVar[type[CheckOptions]] = UnicodeOptions
    stages = frozenset({Stage.INPUT, Stage.OUTPUT})

    def __init__(self, options: CheckOptions) -> None:
        super().__init__(options)
        opts: UnicodeOptions = options  # type: ignore[assignment]
        rules = [
            ("unicode.tag_characters", _TAGS, opts.tags, Severity.HIGH),
            ("unicode.bidi_control", _BIDI, opts.bidi, Severity.MEDIUM),
            ("unicode.invisible", _INVISIBLE, opts.invisible, Severity.LOW),
        ]
        self._rules = [rule for rule in rules if rule[2] is not Action.ALLOW]
        self._control = opts.control
        self._homoglyphs = opts.homoglyphs

    def scan(self, text: str) -> list[Finding]:
        findings: list[Finding] = []
        if self._control is not Action.ALLOW:
            for match in _CONTROL.finditer(text):
                findings.append(
                    Finding(
                        match.start(),
                        match.end(),
                        "unicode.control",
                        "unicode",
                        Severity.LOW,
                        self._control,
                    )
                )
        if text.isascii():
            return findings
        for type_, pattern, action, severity in self._rules:
            for match in pattern.finditer(text):
                if pattern is _TAGS and _is_flag(text, match):
                    continue
                findings.append(
                    Finding(match.start(), match.end(), type_, "unicode", severity, action)
                )
        if self._homoglyphs is not Action.ALLOW and _CONFUSABLE_CHAR.search(text):
            for match in _WORD.finditer(text):
                word = match.group()
                if _LATIN_CHAR.search(word) and _CONFUSABLE_CHAR.search(word):
                    findings.append(
                        Finding(
                            match.start(),
                            match.end(),
                            "unicode.homoglyph",
                            "unicode",
                            Severity.MEDIUM,
                            self._homoglyphs,
                            word.translate(_CONFUSABLE_TABLE),
                        )
                    )
        return findings

    def hold(self, text: str) -> Hold:
        index = len(text) if text.isascii() else _TAIL.search(text).start()
        if index == len(text) and self._homoglyphs is not Action.ALLOW:
            # A word may still gain a look-alike letter ("p" then "аypal").
            word = _WORD_TAIL.search(text)
            if word is not None:
                index = word.start()
        actions = [rule[2] for rule in self._rules] + [self._homoglyphs]
        return Hold(index, "", max(actions, key=lambda action: action.rank))
