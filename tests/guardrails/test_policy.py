"""Policy schema, validation errors, unsafe regexes, JSON round trip and the compile cache."""

import pytest

from guardrails import DEFAULT_POLICY, Policy, PolicyError, compile_policy, validate_policy
from guardrails.saferegex import UnsafeRegex, check_pattern

DENY = "guardrails.checks.denylist.DenyList"
PII = "guardrails.checks.pii.PII"


def test_the_default_policy_round_trips_through_json():
    again = validate_policy(DEFAULT_POLICY.model_dump_json())
    assert again == DEFAULT_POLICY
    assert again.fingerprint == DEFAULT_POLICY.fingerprint


def test_saved_options_state_every_default():
    policy = validate_policy({"input": [{"NAME": PII}]})
    assert policy.input[0].OPTIONS["email"] == "mask"
    assert "phone_regions" in policy.input[0].OPTIONS


def test_an_invalid_policy_lists_every_bad_field():
    with pytest.raises(PolicyError) as caught:
        validate_policy(
            {
                "version": 0,
                "input": [
                    {"NAME": PII, "OPTIONS": {"email": "shred", "colour": "red"}},
                    {"NAME": "os.system"},
                ],
                "stream": {"window": 1},
            }
        )
    fields = {error["field"] for error in caught.value.errors}
    assert fields == {
        "version",
        "input.0.OPTIONS.email",
        "input.0.OPTIONS.colour",
        "input.1.NAME",
        "stream.window",
    }
    assert "input.0.OPTIONS.email" in str(caught.value)


def test_a_policy_cannot_name_an_unregistered_class():
    with pytest.raises(PolicyError, match=r"unknown check 'os\.system'"):
        validate_policy({"input": [{"NAME": "os.system"}]})


def test_input_only_checks_are_refused_on_output():
    with pytest.raises(PolicyError, match="cannot run on output"):
        validate_policy({"output": [{"NAME": "guardrails.checks.injection.PromptInjection"}]})


@pytest.mark.parametrize(
    "pattern", [r"(a+)+$", r"(\w+\s?)*$", r"(a|aa)*b", r"(x)\1", r"(?:[a-z]*)*"]
)
def test_catastrophic_regexes_are_refused_when_saved(pattern):
    with pytest.raises(PolicyError) as caught:
        validate_policy({"input": [{"NAME": DENY, "OPTIONS": {"regexes": ["fine\\d+", pattern]}}]})
    assert caught.value.errors[0]["field"] == "input.0.OPTIONS.regexes"
    assert "[1]" in caught.value.errors[0]["message"]


@pytest.mark.parametrize(
    "pattern", [r"\bproject (?:falcon|eagle)\b", r"ticket-\d{4,8}", r"[A-Z]{3}-\d+"]
)
def test_ordinary_regexes_are_accepted(pattern):
    check_pattern(pattern)


def test_invalid_and_oversized_patterns_are_refused():
    with pytest.raises(UnsafeRegex, match="invalid"):
        check_pattern("[unclosed")
    with pytest.raises(UnsafeRegex, match="longer"):
        check_pattern("a" * 501)


def test_compiled_pipelines_are_cached_by_content():
    first = validate_policy({"version": 3, "input": [{"NAME": PII}]})
    same = validate_policy({"version": 3, "input": [{"NAME": PII, "OPTIONS": {}}]})
    other = validate_policy({"version": 4, "input": [{"NAME": PII}]})
    assert compile_policy(first) is compile_policy(same)
    assert compile_policy(first) is not compile_policy(other)


def test_policies_are_immutable():
    with pytest.raises(ValueError, match="frozen"):
        DEFAULT_POLICY.version = 2  # type: ignore[misc]
    assert isinstance(DEFAULT_POLICY, Policy)
