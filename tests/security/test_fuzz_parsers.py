"""Hypothesis on the parsers that take outside input: nothing escapes but their documented
errors. (The SNP and TDX report parsers: tests/attestation/test_bad_input.py.)

Runs are derandomized (the same examples every run, so CI is reproducible); set
`FUZZ_EXAMPLES` for a longer exploration.
"""

import contextlib
import json
import os
import string

import pytest
from django.test import RequestFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails import PolicyError, compile_policy, validate_policy
from inference.errors import InferenceError
from inference.multipart import multipart_parse
from inference.registry_file import RegistryFileError, load
from tokens import keys

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

# JSON-like values, nested.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


# Tokens --------------------------------------------------------------------------------------


@FUZZ
@given(
    st.one_of(
        st.text(max_size=120),
        st.text(alphabet=string.ascii_letters + string.digits + "_", max_size=120).map(
            lambda tail: "cube_pat_" + tail
        ),
    )
)
def test_the_token_parser_takes_any_string(text):
    parsed = keys.parse(text)
    assert parsed is None or keys.compose(parsed) == text


@FUZZ
@given(st.integers(min_value=0), st.characters(codec="ascii"))
def test_one_changed_character_fails_the_checksum(position, replacement):
    token, _ = keys.generate()
    position %= len(token)
    changed = token[:position] + replacement + token[position + 1 :]
    if changed != token:
        assert keys.parse(changed) is None


# The multipart reader ------------------------------------------------------------------------

BOUNDARY = st.text(alphabet=string.ascii_letters + string.digits + "'()+_,-./:=? ", max_size=80)


def _part(headers: list[str], content: bytes) -> bytes:
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + content


@st.composite
def multipart_bodies(draw):
    boundary = draw(BOUNDARY)
    if draw(st.booleans()):
        return boundary, draw(st.binary(max_size=2000))
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.text(max_size=20))
        headers = [f'Content-Disposition: form-data; name="{name}"']
        if draw(st.booleans()):
            headers[0] += f'; filename="{draw(st.text(max_size=20))}"'
            headers.append(f"Content-Type: {draw(st.text(max_size=30))}")
        headers += draw(st.lists(st.text(max_size=40), max_size=2))
        parts.append(_part(headers, draw(st.binary(max_size=300))))
    marker = f"--{boundary}".encode()
    body = b"".join(marker + b"\r\n" + part + b"\r\n" for part in parts)
    if draw(st.booleans()):
        body += marker + b"--\r\n"
    return boundary, body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


@FUZZ
@given(multipart_bodies())
def test_the_multipart_reader_answers_400_or_reads_the_form(sample):
    boundary, body = sample
    request = RequestFactory().generic(
        "POST", "/", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    try:
        multipart_parse(request)
    except InferenceError as error:
        assert error.status == 400 and error.code == "invalid_multipart"
        return
    assert request.POST is not None and request.FILES is not None


# The YAML registry file ----------------------------------------------------------------------

YAML_KEYS = ["backends", "models", "name", "base_url", "tasks", "deployments", "backend"]


@st.composite
def registry_texts(draw):
    if draw(st.booleans()):
        return draw(st.text(max_size=300))
    # Structured: JSON is YAML, with the file's own keys now and then.
    keyed = st.dictionaries(st.sampled_from(YAML_KEYS) | st.text(max_size=8), JSON, max_size=4)
    return json.dumps(draw(keyed | JSON))


@pytest.mark.django_db
@FUZZ
@given(registry_texts())
def test_the_registry_file_is_loaded_or_refused_with_its_reasons(text):
    try:
        load(text)
    except RegistryFileError as error:
        assert str(error)


# The guardrail policy validator --------------------------------------------------------------

CHECK_NAMES = [
    "guardrails.checks.denylist.DenyList",
    "guardrails.checks.secrets.Secrets",
    "guardrails.checks.pii.PII",
    "nope.Nope",
]


@st.composite
def policies(draw):
    if draw(st.booleans()):
        return draw(JSON)
    spec = st.fixed_dictionaries(
        {"NAME": st.sampled_from(CHECK_NAMES) | st.text(max_size=10)},
        optional={"OPTIONS": JSON, "ACTION": JSON, "SEVERITY": JSON},
    )
    return draw(
        st.fixed_dictionaries(
            {},
            optional={
                "description": JSON,
                "input": st.lists(spec, max_size=3) | JSON,
                "output": st.lists(spec, max_size=3) | JSON,
            },
        )
    )


@FUZZ
@given(policies(), st.booleans())
def test_the_policy_validator_refuses_with_field_errors(document, as_json):
    try:
        policy = validate_policy(json.dumps(document) if as_json else document)
    except PolicyError as error:
        assert error.errors and all({"field", "message"} <= set(e) for e in error.errors)
        return
    with contextlib.suppress(PolicyError):
        compile_policy(policy)
