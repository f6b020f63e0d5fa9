"""The transcription page with Django's test client: who sees it, refused uploads (with
nothing stored), cancelling and downloading only one's own jobs."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from inference.jobs import storage
from inference.jobs.models import TranscriptionJob
from inference.models import Model
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def page_url(domain):
    return reverse("domain_transcriptions", kwargs={"domain_id": domain.pk})


@pytest.fixture
def whisper(db, settings):
    settings.CUBEAI_ROUTING_REFRESH_SECONDS = 0
    return Model.objects.create(name="whisper-tiny.en", tasks=["transcription"])


def signed_in(client, user):
    assert client.login(username=user.email, password=PASSWORD)
    return client


def test_members_with_an_audio_right_see_the_page_and_its_tab(
    client, alice, bob, charlie, domain, page_url, whisper
):
    overview = signed_in(client, alice).get(reverse("domain", kwargs={"domain_id": domain.pk}))
    assert page_url in overview.content.decode()
    page = client.get(page_url)
    assert page.status_code == 200
    body = page.content.decode()
    assert '<option value="whisper-tiny.en"' in body
    assert f"/ws/domains/{domain.pk}/transcriptions/" in body

    client.logout()
    viewer = signed_in(client, bob)
    assert (
        page_url
        not in viewer.get(reverse("domain", kwargs={"domain_id": domain.pk})).content.decode()
    )
    assert viewer.get(page_url).status_code == 403
    client.logout()
    assert signed_in(client, charlie).get(page_url).status_code == 404


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The submitted file is empty."),
        (b"plain text, not audio " * 10, "not audio"),
        (b"RIFF\0\0\0\0WAVE" + b"\0" * 2048, "larger than the limit"),
    ],
    ids=["empty", "not-audio", "over-size"],
)
def test_refused_uploads_say_why_and_store_nothing(
    client, alice, domain, page_url, whisper, settings, content, message
):
    settings.CUBEAI_MAX_AUDIO_BYTES = 1024
    before = set(storage.stored_ids())
    response = signed_in(client, alice).post(
        page_url,
        {
            "file": SimpleUploadedFile("a.wav", content),
            "model": "whisper-tiny.en",
            "task": "transcribe",
            "language": "",
            "response_format": "text",
        },
    )
    assert response.status_code in (400, 413)
    assert message in response.content.decode()
    assert not TranscriptionJob.objects.exists()
    assert set(storage.stored_ids()) == before


def test_a_finished_job_cannot_be_cancelled_and_others_jobs_are_not_found(
    client, alice, bob, domain, whisper
):
    done = TranscriptionJob.objects.create(
        domain=domain,
        owner=alice,
        model="whisper-tiny.en",
        status="succeeded",
        result={
            "text": "hello there",
            "segments": [{"start": 0, "end": 1.5, "text": " hello there"}],
        },
    )
    signed_in(client, alice)
    cancel = reverse(
        "domain_transcription_cancel", kwargs={"domain_id": domain.pk, "job_id": done.pk}
    )
    followed = client.post(cancel, follow=True)
    assert "already succeeded" in followed.content.decode()
    assert TranscriptionJob.objects.get(pk=done.pk).status == "succeeded"
    vtt = client.get(
        reverse(
            "domain_transcription_result",
            kwargs={"domain_id": domain.pk, "job_id": done.pk, "fmt": "vtt"},
        )
    )
    assert vtt.content.decode() == "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nhello there\n"
    assert vtt["Content-Disposition"].startswith("attachment;")

    bobs = TranscriptionJob.objects.create(domain=domain, owner=bob, model="whisper-tiny.en")
    for name, extra in (
        ("domain_transcription_result", {"fmt": "txt"}),
        ("domain_transcription_cancel", {}),
    ):
        url = reverse(name, kwargs={"domain_id": domain.pk, "job_id": bobs.pk, **extra})
        response = client.post(url) if "cancel" in name else client.get(url)
        assert response.status_code == 404
    assert TranscriptionJob.objects.get(pk=bobs.pk).status == "queued"


def test_cancelling_a_queued_job_on_the_page_deletes_its_audio(client, alice, domain, whisper):
    job = TranscriptionJob.objects.create(domain=domain, owner=alice, model="whisper-tiny.en")
    storage.save(job.pk, [b"RIFF....WAVE"])
    signed_in(client, alice)
    cancel = reverse(
        "domain_transcription_cancel", kwargs={"domain_id": domain.pk, "job_id": job.pk}
    )
    followed = client.post(cancel, follow=True)
    assert "The job is cancelled." in followed.content.decode()
    row = TranscriptionJob.objects.get(pk=job.pk)
    assert (row.status, row.options) == ("cancelled", {})
    assert row.finished_at is not None
    assert not storage.path_of(job.pk).exists()
