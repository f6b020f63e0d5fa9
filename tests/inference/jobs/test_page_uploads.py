"""Uploads to the transcription page through the live server (uvicorn, its body limits and
Django's multipart parser), not Django's test client: a gateway whose
`CUBEAI_MAX_AUDIO_BYTES` is exactly the size of a ~5 MiB WAV, larger than the API's JSON
limit. The WAV goes through the page (and the jobs API) whole, is transcribed by a real
worker and the real agent; a file over the limit is refused with a readable error and leaves
no row and no file."""

import re
import subprocess
import uuid

import httpx
import pytest

from inference.jobs import storage
from inference.jobs.models import TranscriptionJob
from tests.conftest import _stop
from tests.inference.conftest import committed, start_gateway
from tests.inference.jobs.conftest import SENTENCE
from tests.inference.jobs.test_api import follow, get, words

pytestmark = [pytest.mark.e2e, pytest.mark.models, pytest.mark.django_db]

JSON_LIMIT = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def big_wav(speech):
    """About a minute of speech as a 48 kHz WAV: over 4 MiB, well under 25 MiB."""
    small = speech(" ".join([SENTENCE] * 14))
    big = small.with_name("meeting-48k.wav")
    subprocess.run(["sox", str(small), "-r", "48000", str(big)], check=True)
    audio = big.read_bytes()
    assert JSON_LIMIT < len(audio) < 8 * 1024 * 1024, len(audio)
    return audio


@pytest.fixture(scope="module")
def gateway(jobs_stack, big_wav, queue, django_db_blocker, tmp_path_factory):
    """A gateway whose audio limit is the WAV's size to the byte, on the workers' queue."""
    with django_db_blocker.unblock():
        process, url = start_gateway(
            tmp_path_factory.mktemp("big-gateway"),
            CUBEAI_MAX_AUDIO_BYTES=str(len(big_wav)),
            CUBEAI_CELERY_QUEUE=queue,
        )
    jobs_stack.routed(gateway=url)
    yield url
    _stop(process)


def signed_in(gateway: str) -> httpx.Client:
    client = httpx.Client(base_url=gateway, timeout=60)
    client.get("/signin/")
    response = client.post(
        "/signin/",
        data={
            "username": "e2e-alice@example.com",
            "password": "pw-alice-123456",
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    assert response.status_code == 302, response.text
    return client


def upload(client: httpx.Client, page: str, audio: bytes, name: str) -> httpx.Response:
    """Post the page's form as a browser does (it accepts HTML)."""
    return client.post(
        page,
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        data={
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "model": "whisper-tiny.en",
            "task": "transcribe",
            "language": "en",
            "response_format": "text",
        },
        files={"file": (name, audio, "audio/wav")},
    )


def jobs_named(name: str) -> list[TranscriptionJob]:
    return committed(lambda: list(TranscriptionJob.objects.filter(filename=name)))


def test_a_wav_of_exactly_the_audio_limit_passes_the_page_and_the_api_and_is_transcribed(
    jobs_stack, worker, gateway, big_wav
):
    page = f"/domains/{jobs_stack.alpha.pk}/transcriptions/"
    name = f"meeting-{uuid.uuid4().hex[:8]}.wav"
    client = signed_in(gateway)
    response = upload(client, page, big_wav, name)
    assert response.status_code == 302, response.text[:2000]
    assert "Your audio is queued." in client.get(page).text
    [job] = jobs_named(name)
    assert job.size == len(big_wav)

    # The jobs API takes the same file, at the limit too (cancelled: one transcript is enough).
    api = httpx.post(
        f"{gateway}/proxy/{jobs_stack.alpha.pk}/v1/audio/transcriptions/jobs",
        headers={"Authorization": f"Bearer {jobs_stack.alice_token}"},
        files={"file": ("api.wav", big_wav, "audio/wav")},
        data={"model": "whisper-tiny.en"},
        timeout=60,
    )
    assert api.status_code == 202, api.text
    assert api.json()["bytes"] == len(big_wav)
    httpx.delete(
        f"{gateway}/proxy/{jobs_stack.alpha.pk}/v1/audio/transcriptions/jobs/{api.json()['id']}",
        headers={"Authorization": f"Bearer {jobs_stack.alice_token}"},
    )

    final = follow(jobs_stack, str(job.pk))[-1]
    assert final["status"] == "succeeded", (final, worker.log())
    assert 50 < final["duration"] < 80
    text = get(jobs_stack, f"/{job.pk}/result", format="txt").text
    assert words(text).count("fox") >= 12, text
    assert "lazy dog" in text.lower()


def test_a_file_over_the_limit_gets_a_readable_error_and_leaves_nothing(
    jobs_stack, worker, gateway, big_wav
):
    page = f"/domains/{jobs_stack.alpha.pk}/transcriptions/"
    client = signed_in(gateway)
    files_before = set(storage.stored_ids())

    # One byte over: the body passes, and the form says why the file was refused.
    one_over = f"one-over-{uuid.uuid4().hex[:8]}.wav"
    response = upload(client, page, big_wav + b"\0", one_over)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert f"The audio file is larger than the limit of {len(big_wav)} bytes." in response.text
    assert '<form method="post"' in response.text  # the page, with its form, again

    # A megabyte over: refused while it streams in, with a page that says so, not JSON.
    far_over = f"far-over-{uuid.uuid4().hex[:8]}.wav"
    response = upload(client, page, big_wav + b"\0" * 2**20, far_over)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert re.search(r"exceeds the limit of \d+ MB\.", response.text), response.text
    assert f'href="{page}"' in response.text

    # The API says the same in its envelope, for one byte over.
    api = httpx.post(
        f"{gateway}/proxy/{jobs_stack.alpha.pk}/v1/audio/transcriptions/jobs",
        headers={"Authorization": f"Bearer {jobs_stack.alice_token}"},
        files={"file": (one_over, big_wav + b"\0", "audio/wav")},
        data={"model": "whisper-tiny.en"},
        timeout=60,
    )
    assert api.status_code == 413
    assert api.json()["error"]["code"] == "request_too_large"

    assert jobs_named(one_over) == jobs_named(far_over) == []
    assert set(storage.stored_ids()) == files_before
