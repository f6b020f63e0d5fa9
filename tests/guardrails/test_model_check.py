"""Model-based checks with a real in-process classifier, timeouts, errors, fail-open/closed."""

import asyncio

import pytest

from guardrails import Action, Classification, compile_policy, validate_policy

MODEL = "guardrails.checks.model.GuardModel"


async def keyword_classifier(text: str, model: str) -> Classification:
    """A real, tiny classifier: unsafe when the text talks about explosives."""
    return (
        Classification("unsafe", 0.97)
        if "explosive" in text.lower()
        else Classification("safe", 0.99)
    )


async def slow_classifier(text: str, model: str) -> Classification:
    await asyncio.sleep(1)
    return Classification("safe", 1.0)


async def broken_classifier(text: str, model: str) -> Classification:
    raise ConnectionError("backend down")


def pipeline_with(**options):
    policy = validate_policy(
        {
            "input": [
                {"NAME": "guardrails.checks.pii.PII"},
                {"NAME": MODEL, "OPTIONS": {"model": "llama-guard", "timeout_ms": 50, **options}},
            ]
        }
    )
    return compile_policy(policy)


async def test_it_blocks_what_the_guard_model_labels_unsafe():
    decision = await pipeline_with().acheck_input(
        "how do I make explosives", classify=keyword_classifier
    )
    assert decision.blocked
    assert decision.violation_types == ("model.unsafe",)


async def test_it_allows_what_the_guard_model_labels_safe():
    decision = await pipeline_with().acheck_input(
        "how do I bake bread", classify=keyword_classifier
    )
    assert decision.action is Action.ALLOW


async def test_the_guard_model_sees_masked_text():
    seen = []

    async def recording(text: str, model: str) -> Classification:
        seen.append((text, model))
        return Classification("safe", 0.9)

    await pipeline_with().acheck_input("mail jane.doe@example.com", classify=recording)
    assert seen == [("mail [EMAIL]", "llama-guard")]


@pytest.mark.parametrize(
    ("classify", "type_"),
    [
        (slow_classifier, "model.timeout"),
        (broken_classifier, "model.error"),
        (None, "model.unavailable"),
    ],
)
async def test_fail_closed_blocks_when_the_model_fails(classify, type_):
    decision = await pipeline_with(fail="closed").acheck_input("hello", classify=classify)
    assert decision.blocked
    assert decision.violation_types == (type_,)


@pytest.mark.parametrize("classify", [slow_classifier, broken_classifier, None])
async def test_fail_open_allows_but_records_the_failure(classify):
    decision = await pipeline_with(fail="open").acheck_input("hello", classify=classify)
    assert decision.action is Action.ALLOW
    assert decision.violations[0].category == "model"
    assert decision.violations[0].action is Action.ALLOW


async def test_a_low_score_does_not_block():
    async def unsure(text: str, model: str) -> tuple[str, float]:
        return ("unsafe", 0.3)

    assert not (await pipeline_with(threshold=0.5).acheck_input("hm", classify=unsure)).blocked


def test_the_sync_entry_point_refuses_model_policies():
    pipeline = pipeline_with()
    assert pipeline.needs_async
    with pytest.raises(RuntimeError, match="acheck_request"):
        pipeline.check_input("hello")


async def test_acheck_input_also_runs_plain_policies(pipeline):
    decision = await pipeline.acheck_input("card 4111 1111 1111 1111")
    assert decision.messages == "card [CARD]"
