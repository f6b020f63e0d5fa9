"""Attestation end to end: routing through the real gateway follows the verification
result and policy changes, in both directions, and traffic is pinned to the attested key.

The challenge runs in the test process (as the Celery worker or `manage.py attest` would);
the real gateway only reads the committed backend rows, like every replica does: a change
is routed within the routing delay (`eventually`).
"""

import datetime
import os
import ssl
import sys
import time
import urllib.request

import httpx
import pytest
from django.utils import timezone

from domains import permissions, services
from domains.models import User
from inference import credentials
from inference.attestation import TeeType, configure
from inference.attestation import selectors as attestation_selectors
from inference.attestation import services as attestation_services
from inference.attestation.snp import SnpVerifier
from inference.models import (
    AttestationRecord,
    Backend,
    Deployment,
    Model,
    registry_changed,
)
from tests.agent.credentials import AGENT_CREDENTIAL, credentials_file
from tests.agent.test_attestation import make_tls_pair
from tests.attestation.conftest import MILAN_MEASUREMENT, snp_evidence
from tests.conftest import _stop
from tests.inference.conftest import ROOT, ROUTING_DELAY, SLACK, eventually, free_port
from tests.inference.fake_agent import FakeAgent, SimulatedSnpVerifier

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cast(gateway_url):
    """A domain and a token with every permission; committed (the gateway is another
    process) and flushed after each test like every transactional test's rows."""
    from tokens import services as token_services

    owner = User.objects.create_user("att-e2e@example.com", "pw-att-e2e-123456")
    domain = services.domain_create(creator=owner, name="Att E2E", route="att-e2e")
    _, token = token_services.token_issue(
        owner=owner,
        name="att-e2e",
        scopes=sorted(permissions.ALL),
        domains=None,
        expires_at=timezone.now() + datetime.timedelta(days=1),
    )
    return {"gateway": gateway_url, "domain": domain, "token": token}


def serve(model: str, backend: Backend, upstream: str = "") -> None:
    row = Model.objects.create(name=model, tasks=["chat", "embedding"])
    Deployment.objects.create(model=row, backend=backend, upstream_model=upstream or model)


def chat(cast, model: str) -> httpx.Response:
    return httpx.post(
        f"{cast['gateway']}/proxy/{cast['domain'].pk}/v1/chat/completions",
        headers={"Authorization": f"Bearer {cast['token']}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


def answered(status: int, send, *args, within: float = 0) -> httpx.Response:
    """`send(*args)`'s response once it is `status`: a change is routed within the routing
    delay (plus `within` seconds)."""

    def check() -> httpx.Response:
        response = send(*args)
        assert response.status_code == status, response.text
        return response

    return eventually(check, timeout=within + ROUTING_DELAY + SLACK)


@pytest.fixture
def simulated_tee():
    configure({TeeType.SEV_SNP: SimulatedSnpVerifier()})
    yield
    configure({TeeType.SEV_SNP: SnpVerifier()})


def test_routing_follows_verification_and_policy_changes(cast, tmp_path, simulated_tee):
    agent = FakeAgent(tls=make_tls_pair(tmp_path))
    try:
        backend = Backend.objects.create(
            name="att-e2e-sim", base_url=f"{agent.url}/v1", kind="agent", tee_type="sev-snp"
        )
        serve("att-e2e-sim", backend)
        good = {"measurements": [agent.measurement], "min_tcb": "any"}
        attestation_services.attestation_policy_set(backend=backend, document=good)

        # Never attested: not routed.
        answered(503, chat, cast, "att-e2e-sim")
        assert attestation_services.backend_attest(backend=backend, trigger="on-demand").ok
        routed = answered(200, chat, cast, "att-e2e-sim")
        assert routed.headers["x-cube-backend-attestation"] == "verified"
        assert routed.headers["x-cube-tee"] == "sev-snp"
        assert "x-cube-confidential" not in routed.headers

        # A policy the backend fails: out within the routing delay (the old verification is
        # void), and the challenge under the new policy records why.
        attestation_services.attestation_policy_set(
            backend=backend, document={"measurements": ["cd" * 48], "min_tcb": "any"}
        )
        answered(503, chat, cast, "att-e2e-sim")
        record = attestation_services.backend_attest(backend=backend, trigger="policy-change")
        assert not record.ok and record.policy_version == 2
        assert {f["code"] for f in record.failures} == {"measurement_mismatch"}
        assert chat(cast, "att-e2e-sim").status_code == 503

        # Back to a policy it passes: back in routing once attested again.
        attestation_services.attestation_policy_set(backend=backend, document=good)
        assert attestation_services.backend_attest(backend=backend, trigger="policy-change").ok
        answered(200, chat, cast, "att-e2e-sim")

        # A replayed reply (a nonce it did not answer) takes it out again.
        agent.behaviour = "replay"
        last = AttestationRecord.objects.filter(backend=backend, ok=True).first()
        agent.captured = attestation_selectors.record_download(last)["attestation"] | {
            "generated_at": last.at.isoformat()
        }
        failed = attestation_services.backend_attest(backend=backend, trigger="periodic")
        assert {"nonce_mismatch", "binding_mismatch"} <= {f["code"] for f in failed.failures}
        answered(503, chat, cast, "att-e2e-sim")

        # An expired verification is not routed either, even before the periodic run: the
        # snapshot is rebuilt when the first verification in it expires.
        agent.behaviour = "simulated"
        assert attestation_services.backend_attest(backend=backend, trigger="on-demand").ok
        answered(200, chat, cast, "att-e2e-sim")
        Backend.objects.filter(pk=backend.pk).update(
            attestation_expires_at=timezone.now() + datetime.timedelta(seconds=1)
        )
        registry_changed()  # as every queryset update of backends does
        answered(503, chat, cast, "att-e2e-sim", within=1)
    finally:
        agent.close()


def test_genuine_but_unbound_snp_evidence_is_never_routed(cast, tmp_path):
    agent = FakeAgent(tls=make_tls_pair(tmp_path))
    agent.behaviour, agent.snp_evidence = "snp", snp_evidence("milan")
    try:
        backend = Backend.objects.create(
            name="att-e2e-snp", base_url=f"{agent.url}/v1", kind="agent", tee_type="sev-snp"
        )
        serve("att-e2e-snp", backend)
        attestation_services.attestation_policy_set(
            backend=backend, document={"measurements": [MILAN_MEASUREMENT], "min_tcb": "any"}
        )

        record = attestation_services.backend_attest(backend=backend, trigger="on-demand")

        assert "binding_mismatch" in {f["code"] for f in record.failures}
        backend.refresh_from_db()
        assert backend.attestation_status == "failed"
        response = answered(503, chat, cast, "att-e2e-snp")
        assert response.json()["error"]["code"] == "backend_unavailable"
    finally:
        agent.close()


def start_tls_agent(port: int, cert, key, log_path):
    """The real agent over TLS, serving only the small embedding model."""
    import subprocess

    env = {
        **os.environ,
        "CUBEAI_AGENT_CREDENTIALS_FILE": str(credentials_file(log_path.parent)),
        "CUBEAI_AGENT_PORT": str(port),
        "CUBEAI_AGENT_MODELS": "all-minilm-l6-v2",
        "CUBEAI_AGENT_ATTESTATION": "none",
        "CUBEAI_AGENT_TLS_CERT": str(cert),
        "CUBEAI_AGENT_TLS_KEY": str(key),
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/health", timeout=2, context=context
            ):
                return process
        except OSError:
            time.sleep(0.2)
    _stop(process)
    pytest.fail(f"the TLS agent did not start:\n{log_path.read_text()[-3000:]}")


def test_traffic_is_pinned_to_the_attested_tls_key(cast, tmp_path):
    port = free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_tls_pair(tmp_path / "a")
    process = start_tls_agent(port, *first, tmp_path / "agent-a.log")
    try:
        backend = Backend.objects.create(
            name="att-e2e-tls",
            base_url=f"https://127.0.0.1:{port}/v1",
            kind="agent",
            allow_not_confidential=True,
        )
        credentials.backend_credential_set(backend=backend, credential=AGENT_CREDENTIAL)
        record = attestation_services.backend_attest(backend=backend, trigger="on-demand")
        assert record.ok, record.failures
        backend.refresh_from_db()
        assert backend.pinned_key_sha256 == record.key_sha256 != ""
        # Served once pinned: a snapshot that routes the model holds the pinned key.
        serve("att-e2e-minilm", backend, "all-minilm-l6-v2")

        def embed() -> httpx.Response:
            return httpx.post(
                f"{cast['gateway']}/proxy/{cast['domain'].pk}/v1/embeddings",
                headers={"Authorization": f"Bearer {cast['token']}"},
                json={"model": "att-e2e-minilm", "input": "hello"},
                timeout=60,
            )

        response = answered(200, embed)
        assert response.headers["x-cube-confidential"] == "false"
        assert response.headers["x-cube-backend-attestation"] == "not-confidential"

        # Another machine (another key) answers on the same address: refused.
        _stop(process)
        process = start_tls_agent(port, *make_tls_pair(tmp_path / "b"), tmp_path / "b.log")
        refused = embed()
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "backend_unavailable"
        # The gateway runs with DEBUG on, which names the cause.
        assert refused.json()["error"]["detail"] == "ServerFingerprintMismatch"

        # Re-attested, the new key is pinned and recorded as a key change.
        again = attestation_services.backend_attest(backend=backend, trigger="on-demand")
        assert again.ok and again.trigger == "key-change"
        assert again.key_sha256 != record.key_sha256
        # Not polled: requests refused on the old pin meanwhile would open the backend's
        # circuit breaker, which is not what is tested here.
        time.sleep(ROUTING_DELAY + SLACK)
        assert embed().status_code == 200
    finally:
        _stop(process)
