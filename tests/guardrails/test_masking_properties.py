"""Property-based tests: masking removes every detected entity and nothing else."""

from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import compile_policy, validate_policy
from guardrails.base import Action, apply_masks, resolve_overlaps

from .conftest import ENTITIES

PIPELINE = compile_policy(
    validate_policy(
        {
            "output": [
                {"NAME": "guardrails.checks.secrets.Secrets"},
                {"NAME": "guardrails.checks.pii.PII"},
            ]
        }
    )
)
PLACEHOLDERS = {placeholder for _, placeholder in ENTITIES.values()}
# Surrounding text that cannot itself form or extend an entity: letters, spaces, punctuation.
FILLER = st.text(alphabet="abcdefghij klmnop,;!?", max_size=30).map(lambda s: f" {s.strip()} ")


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.tuples(FILLER, st.sampled_from(sorted(ENTITIES))), min_size=1, max_size=6),
    tail=FILLER,
)
def test_masking_replaces_each_entity_and_keeps_the_surrounding_text(parts, tail):
    text = "".join(filler + ENTITIES[key][0] for filler, key in parts) + tail
    expected = "".join(filler + ENTITIES[key][1] for filler, key in parts) + tail
    assert PIPELINE.check_output(text).text == expected


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_masking_any_text_leaves_nothing_detectable_and_only_touches_reported_spans(text):
    found = [f for f, _ in PIPELINE.scan_output(text) if f.action is Action.MASK]
    masked = PIPELINE.check_output(text).text
    # The masked text equals the original with exactly the reported spans replaced.
    assert masked == apply_masks(text, resolve_overlaps(found))
    # And scanning the result again finds nothing more to mask.
    assert PIPELINE.scan_output(masked) == []


INPUT = compile_policy(
    validate_policy(
        {
            "input": [
                {"NAME": "guardrails.checks.secrets.Secrets"},
                {"NAME": "guardrails.checks.pii.PII"},
            ]
        }
    )
)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200), entity=st.sampled_from(sorted(ENTITIES)))
def test_input_masking_copies_messages_and_leaves_nothing_detectable(text, entity):
    # The separators keep the random text from joining the entity (digits next to a card).
    content = f"{text} ; {ENTITIES[entity][0]} ; {text}"
    messages = [{"role": "user", "content": content}]
    decision = INPUT.check_input(messages)
    assert messages == [{"role": "user", "content": content}]
    masked = decision.messages[0]["content"]
    assert ENTITIES[entity][0] not in masked
    assert all(not check.scan(masked) for check in INPUT.input_checks)
