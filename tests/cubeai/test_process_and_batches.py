"""The web process's start-up tuning, and the metering flush's bulk insert."""

import datetime
import gc
import sys
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from cubeai import asgi
from cubeai.lib.batches import insert_rows
from inference.models import UsageEvent


def test_startup_freezes_what_is_loaded_and_shortens_the_switch_interval():
    before = sys.getswitchinterval()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message["type"])

    try:
        async_to_sync(asgi.lifespan)({"type": "lifespan"}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        # Django, the views and the models are out of the collector's full passes.
        assert gc.get_freeze_count() > 10_000
        assert sys.getswitchinterval() == pytest.approx(asgi.SWITCH_INTERVAL_SECONDS)
    finally:
        gc.unfreeze()
        sys.setswitchinterval(before)


@pytest.mark.django_db
def test_insert_rows_stores_every_type_and_fills_defaults(domain, alice):
    at = timezone.now().replace(microsecond=123456)
    request = f"req_{uuid.uuid4().hex}"
    insert_rows(
        UsageEvent,
        [
            {
                "domain_id": str(domain.pk),  # a string, as the pipeline has it
                "user_id": alice.pk,
                "token_id": 7,
                "request_id": request,
                "endpoint": "chat.completions",
                "model": "m",
                "status": 200,
                "prompt_tokens": 3,
                "latency_ms": 1.5,
                "stream": True,
                "guardrails": {"decision": "allow", "rules": ["pii"]},
                "created_at": at,
            },
            {"domain_id": domain.pk, "request_id": "minimal", "endpoint": "e", "status": 404,
             "created_at": at - datetime.timedelta(days=1)},
        ],
    )  # fmt: skip
    full = UsageEvent.objects.get(request_id=request)
    assert (full.domain_id, full.user_id, full.token_id) == (domain.pk, alice.pk, 7)
    assert (full.prompt_tokens, full.completion_tokens, full.latency_ms) == (3, 0, 1.5)
    assert full.stream is True and full.usage_source == "backend"
    assert full.guardrails == {"decision": "allow", "rules": ["pii"]}
    assert full.created_at == at
    minimal = UsageEvent.objects.get(request_id="minimal")
    assert [minimal.model, minimal.backend, minimal.attestation] == ["", "", ""]
    assert minimal.guardrails == {}
    assert minimal.user_id is None and minimal.token_id is None and minimal.stream is False
