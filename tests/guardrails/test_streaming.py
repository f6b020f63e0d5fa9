"""Streaming sanitization: splits at every chunk boundary, delay bound, blocking."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import compile_policy, validate_policy

from .conftest import ENTITIES

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    + "\n".join(
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC" + str(i) * 13 for i in range(6)
    )
    + "\n-----END PRIVATE KEY-----"
)


def stream(pipeline, chunks):
    sanitizer = pipeline.stream_sanitizer()
    out = "".join(sanitizer.feed(chunk) for chunk in chunks) + sanitizer.finish()
    return out, sanitizer


def split_everywhere(text):
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]


@pytest.mark.parametrize("key", sorted(ENTITIES))
def test_every_detector_catches_an_entity_split_at_any_point(pipeline, key):
    value, placeholder = ENTITIES[key]
    text = f"Sure, here it is: {value} - anything else?"
    expected = f"Sure, here it is: {placeholder} - anything else?"
    assert pipeline.check_output(text).text == expected
    for chunks in split_everywhere(text):
        assert stream(pipeline, chunks)[0] == expected, chunks
    assert stream(pipeline, list(text))[0] == expected


def test_a_private_key_longer_than_the_window_is_held_whole(pipeline):
    text = f"Key:\n{PEM}\nDone."
    for size in (1, 7, 64):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert stream(pipeline, chunks)[0] == "Key:\n[SECRET]\nDone."


def test_deny_terms_are_caught_across_chunks_and_end_the_stream():
    policy = validate_policy(
        {
            "output": [
                {
                    "NAME": "guardrails.checks.denylist.DenyList",
                    "OPTIONS": {"terms": ["project falcon"]},
                }
            ]
        }
    )
    pipeline = compile_policy(policy)
    text = "Intro. " * 20 + "The codename is Project Falcon, and more text follows here." * 3
    out, sanitizer = stream(pipeline, [text[i : i + 5] for i in range(0, len(text), 5)])
    assert sanitizer.blocked
    assert sanitizer.finish_reason == "content_filter"
    assert "Falcon" not in out
    assert out == text[: len(out)]
    assert sanitizer.feed("more") == "" and sanitizer.finish() == ""
    assert sanitizer.audit()["violations"][0]["type"] == "deny.term"


def test_a_long_deny_term_is_held_whole_until_it_is_complete():
    term = "x" * 100
    policy = validate_policy(
        {
            "output": [
                {
                    "NAME": "guardrails.checks.denylist.DenyList",
                    "OPTIONS": {"terms": [term], "action": "mask"},
                }
            ]
        }
    )
    pipeline = compile_policy(policy)
    text = "a " * 80 + term + " b" * 80
    assert stream(pipeline, list(text))[0] == "a " * 80 + "[REDACTED]" + " b" * 80


def test_prose_is_held_back_by_at_most_its_last_word(pipeline):
    text = "plain words without entities, and more of them. " * 20
    sanitizer = pipeline.stream_sanitizer()
    emitted = 0
    for i, char in enumerate(text, start=1):
        emitted += len(sanitizer.feed(char))
        assert " " not in text[emitted:i], (i, text[emitted:i])
    assert emitted + len(sanitizer.finish()) == len(text)


def test_stream_audit_locates_findings_in_the_whole_completion(pipeline):
    email = ENTITIES["email"][0]
    text = "x" * 200 + " " + email + " tail"
    _, sanitizer = stream(pipeline, [text[i : i + 3] for i in range(0, len(text), 3)])
    (violation,) = sanitizer.violations
    assert (violation.start, violation.end) == (201, 201 + len(email))
    assert email not in str(sanitizer.audit())


WORDS = st.sampled_from(
    [
        "the",
        "report",
        "is",
        "ready",
        "call",
        "me",
        "at",
        "or",
        ",",
        ".",
        "\n",
        "42",
        "2025-01-02",
        "ok",
    ]
)
PIECES = st.one_of(WORDS, st.sampled_from([value for value, _ in ENTITIES.values()]))


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(PIECES, min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30),
)
def test_streaming_equals_whole_text_sanitization_for_any_chunking(pieces, cuts):
    pipeline = compile_policy(
        validate_policy(
            {
                "output": [
                    {"NAME": "guardrails.checks.secrets.Secrets"},
                    {"NAME": "guardrails.checks.pii.PII"},
                ]
            }
        )
    )
    text = " ".join(pieces)
    chunks, position, index = [], 0, 0
    while position < len(text):
        size = cuts[index % len(cuts)]
        chunks.append(text[position : position + size])
        position += size
        index += 1
    assert stream(pipeline, chunks)[0] == pipeline.check_output(text).text


BIG_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    + "\n".join(f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC{i:013d}" for i in range(160))
    + "\n-----END PRIVATE KEY-----"
)


def small_hold_pipeline(**secrets_options):
    policy = {
        "output": [
            {"NAME": "guardrails.checks.secrets.Secrets", "OPTIONS": secrets_options},
            {"NAME": "guardrails.checks.pii.PII"},
        ],
        "stream": {"max_hold": 256},
    }
    return compile_policy(validate_policy(policy))


def test_a_10_kb_key_is_masked_whole_even_past_the_hold_limit():
    text = f"Key:\n{BIG_PEM}\nDone, write to jane.doe@example.com."
    assert len(BIG_PEM) > 10_000
    for size in (1, 4, 64, 1000):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        out, sanitizer = stream(small_hold_pipeline(), chunks)
        assert out == "Key:\n[SECRET]\nDone, write to [EMAIL].", size
        assert not sanitizer.blocked
        assert "stream.unbounded_entity" in {v.type for v in sanitizer.violations}


def test_a_runaway_secret_that_its_check_would_block_ends_the_stream():
    text = f"Key:\n{BIG_PEM}\nDone."
    chunks = [text[i : i + 16] for i in range(0, len(text), 16)]
    out, sanitizer = stream(small_hold_pipeline(action="block"), chunks)
    assert sanitizer.blocked and sanitizer.finish_reason == "content_filter"
    assert out == "Key:\n"


def test_secrets_near_the_end_of_a_100_kb_stream_are_masked(pipeline):
    prose = "Plain words of a long answer, without anything to hide. " * 1800
    text = prose + f"The key {ENTITIES['aws'][0]}, mail {ENTITIES['email'][0]}.\n{PEM}\nBye."
    chunks = [text[i : i + 4] for i in range(0, len(text), 4)]
    out, _ = stream(pipeline, chunks)
    assert out == prose + "The key [SECRET], mail [EMAIL].\n[SECRET]\nBye."


SECRETS = [
    value
    for key, (value, _) in ENTITIES.items()
    if key in {"aws", "github", "cube_pat", "jwt", "stripe"}
]


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(WORDS, max_size=60),
    secret=st.sampled_from([*SECRETS, BIG_PEM]),
    after=st.lists(WORDS, max_size=20),
    cuts=st.lists(st.integers(1, 300), min_size=1, max_size=20),
    max_hold=st.sampled_from([256, 16384]),
)
def test_no_chunking_lets_a_known_secret_through(before, secret, after, cuts, max_hold):
    pipeline = compile_policy(
        validate_policy(
            {
                "output": [
                    {"NAME": "guardrails.checks.secrets.Secrets"},
                    {"NAME": "guardrails.checks.pii.PII"},
                ],
                "stream": {"max_hold": max_hold},
            }
        )
    )
    text = " ".join([*before, secret, *after])
    chunks, position, index = [], 0, 0
    while position < len(text):
        size = cuts[index % len(cuts)]
        chunks.append(text[position : position + size])
        position += size
        index += 1
    out, _ = stream(pipeline, chunks)
    # Not the secret, nor any long enough piece of it.
    pieces = {secret[i : i + 12] for i in range(0, len(secret) - 12, 6)}
    assert not any(piece in out for piece in pieces)
    assert "[SECRET]" in out


def test_a_runaway_longer_than_the_memory_cap_ends_the_stream(monkeypatch):
    from guardrails import streaming

    monkeypatch.setattr(streaming, "RUNAWAY_LIMIT", 2000)
    text = f"Key:\n{BIG_PEM}\nDone."
    out, sanitizer = stream(
        small_hold_pipeline(), [text[i : i + 8] for i in range(0, len(text), 8)]
    )
    assert sanitizer.blocked
    assert out == "Key:\n[SECRET]"
