"""Regexes written by domain admins: refused when they can backtrack catastrophically,
and run with a time limit all the same.

A policy is checked when it is saved: the pattern must compile, stay under a length
limit, and must not nest unbounded quantifiers (`(a+)+`), repeat an alternation without
bound (`(a|ab)*`) or use back-references, the shapes behind exponential backtracking.
Quadratic shapes (`.*a.*a`) pass that test, so every search also runs under the `regex`
package's `timeout=`; a timeout is reported by the caller as a failure of the check.
"""

from __future__ import annotations

# re._parser is CPython's own regex parser (sre_parse before 3.11); parsing with it gives
# the pattern's structure without writing a second regex grammar here.
import re._constants as sre_constants
import re._parser as sre_parser
from typing import Any

import regex

MAX_PATTERN_LENGTH = 500


class UnsafeRegex(ValueError):
    """A pattern that does not compile or could backtrack catastrophically."""


def check_pattern(pattern: str) -> None:
    """Raise `UnsafeRegex` with the reason if `pattern` must not be used."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafeRegex(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    try:
        regex.compile(pattern)
        parsed = sre_parser.parse(pattern)
    except (regex.error, sre_constants.error) as exc:
        raise UnsafeRegex(f"invalid pattern: {exc}") from None
    _walk(parsed, inside_unbounded=False)


_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT}


def _walk(items: Any, *, inside_unbounded: bool) -> None:
    for op, arg in items:
        if op in _REPEATS:
            _low, high, body = arg
            unbounded = high == sre_constants.MAXREPEAT or high > 1000
            if unbounded and inside_unbounded:
                raise UnsafeRegex(
                    "nested unbounded quantifiers (like (a+)+) can backtrack catastrophically"
                )
            if unbounded and any(sub_op is sre_constants.BRANCH for sub_op, _ in _flatten(body)):
                raise UnsafeRegex(
                    "an unbounded quantifier over an alternation (like (a|ab)*) can backtrack catastrophically"
                )
            _walk(body, inside_unbounded=inside_unbounded or unbounded)
        elif op is sre_constants.SUBPATTERN:
            _walk(arg[-1], inside_unbounded=inside_unbounded)
        elif op is sre_constants.BRANCH:
            for branch in arg[1]:
                _walk(branch, inside_unbounded=inside_unbounded)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            _walk(arg[1], inside_unbounded=inside_unbounded)
        elif op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS):
            raise UnsafeRegex("back-references are not allowed")
        elif op is sre_constants.ATOMIC_GROUP:
            _walk(arg, inside_unbounded=inside_unbounded)


def _flatten(items: Any) -> list[tuple[Any, Any]]:
    """The top-level items of a repeat body, looking through plain groups."""
    flat: list[tuple[Any, Any]] = []
    for op, arg in items:
        if op is sre_constants.SUBPATTERN:
            flat.extend(_flatten(arg[-1]))
        else:
            flat.append((op, arg))
    return flat


def compile_pattern(pattern: str, *, ignore_case: bool = True) -> regex.Pattern[str]:
    """Compile a checked pattern with the `regex` package, which supports `timeout=`."""
    check_pattern(pattern)
    flags = regex.IGNORECASE if ignore_case else 0
    return regex.compile(pattern, flags)
