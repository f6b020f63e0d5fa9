"""The attestation challenge (`inference.attestation.challenge` and `services`) against the
real development agent and, for faults and hardware evidence, the fake agent in
`fake_agent.py`."""

import hashlib
import json
import secrets
import urllib.request

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from inference import tasks
from inference.attestation import TeeType, configure
from inference.attestation import services as attestation_services
from inference.attestation.snp import SnpVerifier
from inference.models import AttestationRecord, Backend
from tests.agent.test_attestation import make_tls_pair
from tests.attestation.conftest import MILAN_MEASUREMENT, snp_evidence
from tests.inference.fake_agent import FakeAgent, SimulatedSnpVerifier

pytestmark = pytest.mark.django_db


def codes(record: AttestationRecord) -> set[str]:
    return {failure["code"] for failure in record.failures}


@pytest.fixture
def fake():
    agent = FakeAgent()
    yield agent
    agent.close()


@pytest.fixture
def tls_fake(tmp_path):
    agent = FakeAgent(tls=make_tls_pair(tmp_path))
    yield agent
    agent.close()


@pytest.fixture
def simulated_tee():
    configure({TeeType.SEV_SNP: SimulatedSnpVerifier()})
    yield
    configure({TeeType.SEV_SNP: SnpVerifier()})


def backend(url: str, **fields) -> Backend:
    fields.setdefault("name", f"att-{secrets.token_hex(3)}")
    fields.setdefault("allow_not_confidential", True)
    return Backend.objects.create(base_url=f"{url}/v1", kind="agent", **fields)


def test_the_dev_agent_passes_as_not_confidential_when_marked_allowed(agent_url):
    row = backend(agent_url)

    record = attestation_services.backend_attest(backend=row, trigger="on-demand")

    row.refresh_from_db()
    assert record.ok, record.failures
    assert row.attestation_status == "not-confidential"
    assert row.attestation_expires_at > timezone.now()
    assert record.claims["confidential"] is False
    assert len(record.nonce) == 64 and record.trigger == "on-demand"
    # No TLS: the bound key is empty and there is nothing to pin.
    assert record.report_data == hashlib.sha512(bytes.fromhex(record.nonce)).hexdigest()
    assert row.pinned_key_sha256 == ""


def test_the_dev_agent_fails_when_not_marked_allowed(agent_url):
    row = backend(agent_url, allow_not_confidential=False)

    record = attestation_services.backend_attest(backend=row, trigger="on-demand")

    row.refresh_from_db()
    assert not record.ok
    assert codes(record) == {"insecure_not_allowed"}
    assert row.attestation_status == "failed"
    assert "insecure_not_allowed" in row.attestation_error


def test_a_none_policy_without_allow_insecure_fails_even_if_the_backend_is_allowed(agent_url):
    row = backend(agent_url)
    attestation_services.attestation_policy_set(backend=row, document={"allow_insecure": False})

    assert codes(attestation_services.backend_attest(backend=row, trigger="on-demand")) == {
        "insecure_not_allowed"
    }


def test_a_replayed_reply_fails_on_the_nonce_and_the_binding(agent_url, fake):
    request = urllib.request.Request(
        f"{agent_url}/attestation",
        data=json.dumps({"nonce": secrets.token_hex(32)}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        fake.captured = json.load(response)
    fake.behaviour = "replay"
    row = backend(fake.url)

    record = attestation_services.backend_attest(backend=row, trigger="on-demand")

    row.refresh_from_db()
    assert codes(record) == {"nonce_mismatch", "binding_mismatch"}
    assert row.attestation_status == "failed"


def test_altered_report_data_fails_the_binding(agent_url, fake):
    fake.behaviour, fake.upstream = "alter", agent_url
    row = backend(fake.url)

    record = attestation_services.backend_attest(backend=row, trigger="on-demand")

    assert codes(record) == {"binding_mismatch"}


@pytest.mark.parametrize(
    ("behaviour", "code", "words"),
    [
        ("garbage", "malformed_reply", "malformed attestation reply"),
        ("slow", "agent_unreachable", "no reply within 1 s"),
        ("error", "agent_error", "HTTP 503"),
        ("huge", "agent_unreachable", "larger than"),
    ],
)
def test_faults_are_clear_failures_never_exceptions(fake, settings, behaviour, code, words):
    settings.CUBEAI_ATTESTATION_TIMEOUT_SECONDS = 1
    fake.behaviour = behaviour
    row = backend(fake.url)

    record = attestation_services.backend_attest(backend=row, trigger="periodic")

    row.refresh_from_db()
    assert codes(record) == {code}
    assert words in record.failures[0]["message"]
    assert row.attestation_status == "failed"
    assert AttestationRecord.objects.filter(backend=row, ok=False).count() == 1


def test_an_unreachable_agent_fails_cleanly(db):
    from tests.inference.conftest import free_port

    row = backend(f"http://127.0.0.1:{free_port()}")

    assert codes(attestation_services.backend_attest(backend=row, trigger="on-demand")) == {
        "agent_unreachable"
    }


def test_real_snp_evidence_fails_the_binding_and_a_wrong_measurement(tls_fake):
    # Genuine AMD-signed evidence, but for someone else's nonce: the binding must fail.
    tls_fake.behaviour = "snp"
    tls_fake.snp_evidence = snp_evidence("milan")
    row = backend(tls_fake.url, tee_type="sev-snp", allow_not_confidential=False)
    attestation_services.attestation_policy_set(
        backend=row, document={"measurements": [MILAN_MEASUREMENT], "min_tcb": "any"}
    )

    record = attestation_services.backend_attest(backend=row, trigger="on-demand")

    assert "binding_mismatch" in codes(record)
    assert record.claims["measurement"] == MILAN_MEASUREMENT
    attestation_services.attestation_policy_set(
        backend=row, document={"measurements": ["00" * 48], "min_tcb": "any"}
    )
    record = attestation_services.backend_attest(backend=row, trigger="on-demand")
    assert {"binding_mismatch", "measurement_mismatch"} <= codes(record)
    row.refresh_from_db()
    assert row.attestation_status == "failed" and row.pinned_key_sha256 == ""


def test_a_tee_backend_without_a_policy_or_without_tls_fails(fake, simulated_tee):
    row = backend(fake.url, tee_type="sev-snp", allow_not_confidential=False)

    assert "no_policy" in codes(
        attestation_services.backend_attest(backend=row, trigger="on-demand")
    )
    attestation_services.attestation_policy_set(
        backend=row, document={"measurements": [fake.measurement], "min_tcb": "any"}
    )
    record = attestation_services.backend_attest(backend=row, trigger="on-demand")
    assert codes(record) == {"tls_key_mismatch"}
    assert "https" in record.failures[0]["message"]


def test_a_simulated_tee_over_tls_is_verified_and_its_key_pinned(tls_fake, simulated_tee):
    row = backend(tls_fake.url, tee_type="sev-snp", allow_not_confidential=False)
    attestation_services.attestation_policy_set(
        backend=row, document={"measurements": [tls_fake.measurement], "min_tcb": "any"}
    )

    record = attestation_services.backend_attest(backend=row, trigger="on-demand")

    row.refresh_from_db()
    assert record.ok, record.failures
    assert row.attestation_status == "verified"
    assert row.pinned_key_sha256 == hashlib.sha256(tls_fake.tls_key).hexdigest()
    assert record.policy_version == 1


def test_a_key_that_differs_from_the_tls_certificate_fails(tls_fake, simulated_tee, tmp_path):
    # The agent binds a key into its evidence that is not the one its TLS server uses.
    from tests.inference.fake_agent import spki_of

    (tmp_path / "other").mkdir()
    tls_fake.tls_key = spki_of(make_tls_pair(tmp_path / "other")[0])
    row = backend(tls_fake.url, tee_type="sev-snp", allow_not_confidential=False)
    attestation_services.attestation_policy_set(
        backend=row, document={"measurements": [tls_fake.measurement], "min_tcb": "any"}
    )

    assert codes(attestation_services.backend_attest(backend=row, trigger="on-demand")) == {
        "tls_key_mismatch"
    }


def test_a_new_key_is_recorded_as_a_key_change(tls_fake, simulated_tee, tmp_path):
    row = backend(tls_fake.url, tee_type="sev-snp", allow_not_confidential=False)
    attestation_services.attestation_policy_set(
        backend=row, document={"measurements": [tls_fake.measurement], "min_tcb": "any"}
    )
    attestation_services.backend_attest(backend=row, trigger="on-demand")
    Backend.objects.filter(pk=row.pk).update(pinned_key_sha256="00" * 32)

    record = attestation_services.backend_attest(backend=row, trigger="periodic")

    assert record.ok and record.trigger == "key-change"


def test_the_command_prints_the_result_and_fails_with_status_1(agent_url, capsys):
    ok = backend(agent_url, name="att-cmd-ok")
    bad = backend(agent_url, name="att-cmd-bad", allow_not_confidential=False)

    call_command("attest", ok.name)
    assert "OK: att-cmd-ok attested (not-confidential)" in capsys.readouterr().out
    with pytest.raises(CommandError) as failed:
        call_command("attest", bad.name)
    assert failed.value.returncode == 1
    assert "FAIL insecure_not_allowed" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No backend named"):
        call_command("attest", "nope")


def test_the_periodic_task_attests_every_backend_and_expires_stale_ones(agent_url, fake):
    good = backend(agent_url)
    fake.behaviour = "garbage"
    broken = backend(fake.url)
    stale = backend(fake.url, tee_type="tdx", allow_not_confidential=False, enabled=False)
    Backend.objects.filter(pk=stale.pk).update(
        attestation_status="verified", attestation_expires_at=timezone.now()
    )

    summary = tasks.attest_backends()

    assert summary == {"passed": 1, "failed": 1, "expired": 1}
    assert Backend.objects.get(pk=good.pk).attestation_status == "not-confidential"
    assert Backend.objects.get(pk=broken.pk).attestation_status == "failed"
    assert Backend.objects.get(pk=stale.pk).attestation_status == "failed"
    assert AttestationRecord.objects.filter(backend=stale, ok=False).exists()
