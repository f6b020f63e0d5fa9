"""Attestation endpoint abuse (finding: `POST /proxy/<d>/attestation` challenged every
backend and stored the full evidence on each call, for any viewer, without a limit).

Challenges are limited per token and per domain (the shared rate limiter, 429 in OpenAI's
envelope with `Retry-After`); one challenge of a backend is in flight at a time in a process
(the same nonce shares it, another waits, a long queue is a 429); and what is stored is
capped: one client record per backend per interval, its evidence only up to a size.
"""

import asyncio
import secrets
import threading
import time

import pytest
from django.test import Client
from django.utils import timezone

from inference.attestation import services as attestation_services
from inference.attestation.selectors import policy_active
from inference.errors import RateLimited
from inference.models import AttestationRecord, Backend, Deployment, Model


@pytest.fixture
def served(agent_url, domain):
    backend = Backend.objects.create(
        name="abuse-dev", base_url=f"{agent_url}/v1", kind="agent", allow_not_confidential=True
    )
    model = Model.objects.create(name="abuse-chat", tasks=["chat"])
    Deployment.objects.create(model=model, backend=backend, upstream_model="smollm2")
    return backend


def challenge(domain, token, nonce: str | None = None):
    return Client().post(
        f"/proxy/{domain.pk}/attestation",
        data={"nonce": nonce or secrets.token_hex(32)},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.mark.django_db
def test_challenges_are_limited_per_token(served, domain, alice, pat, settings):
    settings.CUBEAI_ATTESTATION_CLIENT_TOKEN_RPM = 2
    token = pat(alice)
    for _ in range(2):
        assert challenge(domain, token).status_code == 200
    refused = challenge(domain, token)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "attestation" in refused.json()["error"]["message"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["x-request-id"]
    # Inference keeps its own budget: listing models still works.
    models = Client().get(f"/proxy/{domain.pk}/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert models.status_code == 200


@pytest.mark.django_db
def test_challenges_are_limited_per_domain_across_tokens(served, domain, alice, pat, settings):
    settings.CUBEAI_ATTESTATION_CLIENT_DOMAIN_RPM = 3
    answers = [challenge(domain, pat(alice, name=f"t{i}")).status_code for i in range(4)]
    assert answers == [200, 200, 200, 429]


@pytest.mark.django_db
def test_one_record_per_backend_per_interval_is_stored(served, domain, alice, pat):
    token = pat(alice)
    nonces = [secrets.token_hex(32) for _ in range(4)]
    for nonce in nonces:
        answer = challenge(domain, token, nonce).json()
        # Each client still gets fresh evidence for its own nonce.
        assert answer["data"][0]["attestation"]["nonce"] == nonce
    records = AttestationRecord.objects.filter(backend=served, trigger="client")
    assert list(records.values_list("nonce", flat=True)) == [nonces[0]]


@pytest.mark.django_db
def test_oversized_evidence_is_not_stored(served, settings):
    settings.CUBEAI_ATTESTATION_MAX_STORED_BYTES = 64 * 1024
    result = attestation_services.run_challenge(
        backend=served,
        nonce=secrets.token_bytes(32),
        policy_row=policy_active(backend=served),
        now=timezone.now(),
    )
    # The development agent has no TEE: its evidence is made bulky, as a TDX quote with its
    # collateral can be.
    result.reply["evidence"] = "A" * (64 * 1024)
    attestation_services._record_client(backend=served, challenge=result)
    record = AttestationRecord.objects.get(backend=served, trigger="client")
    assert record.evidence == "" and record.auxblob == "" and record.cert_chain == []
    assert record.ok == result.ok and record.nonce == result.nonce.hex()


@pytest.fixture
def slow_challenges(monkeypatch):
    """The real challenge of the real agent, made to last 0.3 s; counts calls and the most
    in flight at once."""
    seen = {"calls": 0, "now": 0, "most": 0}
    lock = threading.Lock()
    real = attestation_services.run_challenge

    def slow(**kwargs):
        with lock:
            seen["calls"] += 1
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
        try:
            time.sleep(0.3)
            return real(**kwargs)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(attestation_services, "run_challenge", slow)
    return seen


@pytest.mark.django_db(transaction=True)
async def test_concurrent_challenges_of_one_backend_are_coalesced(served, slow_challenges):
    nonce = secrets.token_bytes(32)
    same = await asyncio.gather(
        *(attestation_services.client_challenge(backend=served, nonce=nonce) for _ in range(5))
    )
    assert slow_challenges["calls"] == 1
    assert {result.reply["nonce"] for result, _ in same} == {nonce.hex()}

    others = [secrets.token_bytes(32) for _ in range(3)]
    answers = await asyncio.gather(
        *(attestation_services.client_challenge(backend=served, nonce=n) for n in others)
    )
    # Each its own nonce, one at a time.
    assert [result.reply["nonce"] for result, _ in answers] == [n.hex() for n in others]
    assert slow_challenges["calls"] == 4 and slow_challenges["most"] == 1


@pytest.mark.django_db(transaction=True)
async def test_a_long_queue_behind_a_backend_is_refused(served, slow_challenges, settings):
    settings.CUBEAI_ATTESTATION_CLIENT_QUEUE = 2
    outcomes = await asyncio.gather(
        *(
            attestation_services.client_challenge(backend=served, nonce=secrets.token_bytes(32))
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(refused) == 2 and refused[0].headers["Retry-After"] == "1"
    assert slow_challenges["calls"] == 3
