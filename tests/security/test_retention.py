"""Retention (finding: nothing ever deleted usage events, attestation records or expired
invitations). Periodic tasks purge each after `CUBEAI_RETENTION_*_DAYS`, in batches of
primary keys; rows on the kept side of the cut stay."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from domains import services as domain_services
from domains import tasks as domain_tasks
from domains.models import Invitation, Role
from inference import metering
from inference import tasks as inference_tasks
from inference.attestation import services as attestation_services
from inference.jobs import tasks as job_tasks
from inference.models import AttestationRecord, Backend, UsageEvent

DAY = datetime.timedelta(days=1)


def usage(domain, age: datetime.timedelta, endpoint: str = "chat") -> UsageEvent:
    return UsageEvent.objects.create(
        domain=domain,
        request_id=f"req-{age.days}-{endpoint}",
        endpoint=endpoint,
        status=200,
        created_at=timezone.now() - age,
    )


def test_usage_older_than_the_retention_is_deleted_in_batches(domain, other_domain):
    old = [usage(d, 91 * DAY, f"e{i}") for i in range(3) for d in (domain, other_domain)]
    kept = [usage(domain, 89 * DAY), usage(other_domain, DAY), usage(domain, datetime.timedelta())]
    with CaptureQueriesContext(connection) as queries:
        deleted = metering.usage_events_purge(older_than_days=90, batch_size=4)
    assert deleted == len(old) == 6
    assert set(UsageEvent.objects.values_list("pk", flat=True)) == {row.pk for row in kept}
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 2  # 4 + 2 primary keys, never one statement for everything


def test_attestation_records_are_deleted_but_each_backends_latest_is_kept(db):
    now = timezone.now()

    def backend(name):
        return Backend.objects.create(
            name=name, base_url=f"https://{name}.example/v1", tee_type="tdx"
        )

    def record(backend, age, trigger="periodic", ok=True):
        return AttestationRecord.objects.create(
            backend=backend, at=now - age, ok=ok, trigger=trigger, tee_type="tdx", nonce="00"
        )

    busy, stale, idle = backend("busy"), backend("stale"), backend("idle")
    gone = [
        record(busy, 60 * DAY),
        record(busy, 50 * DAY, ok=False),
        record(busy, 40 * DAY),
        record(busy, 35 * DAY, trigger="client"),
        record(stale, 60 * DAY),
    ]
    kept = [
        record(busy, 29 * DAY),  # within the retention period
        record(stale, 40 * DAY),  # its latest platform challenge, shown to members
        record(stale, 35 * DAY, trigger="client"),  # its latest record of all
        record(idle, 90 * DAY),  # its only one
    ]
    deleted = attestation_services.attestation_records_purge(older_than_days=30, batch_size=2)
    assert deleted == len(gone)
    assert set(AttestationRecord.objects.values_list("pk", flat=True)) == {r.pk for r in kept}


def test_closed_invitations_are_deleted_and_open_ones_kept(alice, domain):
    role = Role.objects.get(domain=None, name="member")
    now = timezone.now()

    def invitation(email, status="pending", expires=7 * DAY, responded=None):
        return Invitation.objects.create(
            domain=domain,
            email=email,
            role=role,
            token_digest=email.ljust(64, "0")[:64],
            status=status,
            expires_at=now + expires,
            responded_at=None if responded is None else now - responded,
        )

    gone = [
        invitation("expired-long-ago@x.io", expires=-31 * DAY),
        invitation("accepted@x.io", status="accepted", expires=-25 * DAY, responded=31 * DAY),
        invitation("revoked@x.io", status="revoked", expires=-40 * DAY, responded=45 * DAY),
        invitation("declined@x.io", status="declined", expires=2 * DAY, responded=31 * DAY),
    ]
    kept = [
        invitation("open@x.io"),
        invitation("expired-lately@x.io", expires=-29 * DAY),
        invitation("accepted-lately@x.io", status="accepted", expires=-1 * DAY, responded=5 * DAY),
    ]
    deleted = domain_services.invitations_purge(older_than_days=30, batch_size=2)
    assert deleted == len(gone)
    assert set(Invitation.objects.values_list("email", flat=True)) == {i.email for i in kept}


def test_the_purges_are_scheduled_with_celery_beat(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {
        inference_tasks.usage_events_purge.name,
        inference_tasks.attestation_records_purge.name,
        domain_tasks.invitations_purge.name,
        job_tasks.transcription_jobs_purge.name,
        job_tasks.transcription_jobs_sweep.name,
    } <= tasks
    # The sweeper re-sends jobs whose worker died, within a few of its leases.
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["transcription-jobs-sweep"]["task"] == job_tasks.transcription_jobs_sweep.name
    assert schedule["transcription-jobs-sweep"]["schedule"] == 15
    assert schedule["transcription-jobs-purge"]["task"] == job_tasks.transcription_jobs_purge.name
    assert settings.CUBEAI_RETENTION_USAGE_DAYS == 90
    assert settings.CUBEAI_RETENTION_ATTESTATION_DAYS == 30
    assert settings.CUBEAI_RETENTION_INVITATION_DAYS == 30


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_purges_on_the_test_database(celery_worker_process, alice, domain):
    old, new = usage(domain, 100 * DAY), usage(domain, 10 * DAY)
    assert inference_tasks.usage_events_purge.delay().get(timeout=30) == 1
    assert list(UsageEvent.objects.values_list("pk", flat=True)) == [new.pk]
    assert not UsageEvent.objects.filter(pk=old.pk).exists()
    assert inference_tasks.attestation_records_purge.delay().get(timeout=30) == 0
    assert domain_tasks.invitations_purge.delay().get(timeout=30) == 0
