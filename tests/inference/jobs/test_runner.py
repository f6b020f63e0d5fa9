"""The run's retry rule (`runner.retry_countdown`): which failures a job waits out, and how
long, over the pipeline's own error classes."""

import pytest

from inference.errors import (
    InferenceError,
    ModelNotFound,
    NoBackend,
    RateLimited,
    UpstreamFailed,
    UpstreamTimeout,
)
from inference.jobs import runner
from limits.gate import QuotaExceeded


@pytest.fixture(autouse=True)
def _backoff(settings):
    settings.CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_SECONDS = 10
    settings.CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_MAX_SECONDS = 300
    settings.CUBEAI_TRANSCRIPTION_MAX_ATTEMPTS = 4


def rate_limited(retry_after: str | None) -> RateLimited:
    headers = {"x-ratelimit-remaining-requests": "0"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return RateLimited("Rate limit reached.", headers=headers)


def test_a_spent_monthly_budget_fails_the_job_at_once():
    # A 429, but one no back-off cures before the month rolls over.
    spent = QuotaExceeded("This token's monthly token budget is spent.", headers={})
    assert (spent.status, spent.code) == (429, "insufficient_quota")
    assert runner.retry_countdown(spent, 1) is None


def test_a_rate_limit_waits_for_its_retry_after_when_that_is_longer_than_the_back_off():
    assert runner.retry_countdown(rate_limited("45"), 1) == 45
    assert runner.retry_countdown(rate_limited("3"), 1) == 10  # the back-off is longer
    assert runner.retry_countdown(rate_limited("3"), 2) == 20
    assert runner.retry_countdown(rate_limited(None), 3) == 40
    # A date or garbage leaves the back-off; nothing waits past the longest back-off, which
    # the broker's visibility timeout is checked against.
    assert runner.retry_countdown(rate_limited("Wed, 21 Oct 2026 07:28:00 GMT"), 1) == 10
    assert runner.retry_countdown(rate_limited("86400"), 1) == 300


def test_a_backend_timeout_and_an_unavailable_or_failed_backend_are_retried():
    assert UpstreamTimeout().status == 504
    assert runner.retry_countdown(UpstreamTimeout(), 1) == 10
    assert runner.retry_countdown(UpstreamFailed(), 2) == 20
    assert runner.retry_countdown(NoBackend("No backend is available."), 3) == 40


def test_nothing_is_retried_after_the_last_attempt_or_for_a_request_that_cannot_succeed():
    assert runner.retry_countdown(UpstreamTimeout(), 4) is None
    assert runner.retry_countdown(rate_limited("1"), 4) is None
    assert runner.retry_countdown(ModelNotFound("whisper-huge"), 1) is None
    assert runner.retry_countdown(InferenceError("Bad audio.", code="invalid_audio"), 1) is None
