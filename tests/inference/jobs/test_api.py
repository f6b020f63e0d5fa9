"""Transcription jobs end to end: the real gateway (uvicorn), real Celery worker processes
(the embedded filesystem broker by default, Redis when REDIS_URL is set), the real agent
with Whisper, and speech made by espeak-ng.

A job is submitted through the API, its progress followed as the agent decodes segment after
segment, its transcript read in every format; a worker SIGKILLed mid-job leaves the job to
the sweeper and a restarted worker, which stores the result once; bad input is refused with
clear errors and leaves nothing behind.
"""

import datetime
import re
import time
import uuid

import httpx
import pytest
from django.utils import timezone

from domains import permissions
from domains.models import User
from inference.jobs import storage
from inference.jobs.models import TranscriptionJob
from inference.jobs.tasks import transcription_job_run, transcription_jobs_sweep
from inference.models import Backend, Deployment, Model
from limits.models import TokenLimits
from tests.inference.conftest import GATEWAY_MAX_AUDIO_BYTES, committed, routed, usage_row
from tests.inference.jobs.conftest import LEASE_SECONDS, SENTENCE
from tests.inference.jobs.workers import Worker
from tokens import services as token_services

pytestmark = [pytest.mark.e2e, pytest.mark.models, pytest.mark.django_db]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def jobs_url(stack, domain=None) -> str:
    return f"{stack.base_url(domain or stack.alpha)}/audio/transcriptions/jobs"


def submit(stack, audio: bytes, *, token=None, domain=None, name="speech.wav", **fields):
    data = {"model": "whisper-tiny.en", **fields}
    return httpx.post(
        jobs_url(stack, domain),
        headers={"Authorization": f"Bearer {token or stack.alice_token}"},
        files={"file": (name, audio, "audio/wav")},
        data=data,
        timeout=30,
    )


def get(stack, path: str = "", *, token=None, domain=None, **params):
    return httpx.get(
        jobs_url(stack, domain) + path,
        headers={"Authorization": f"Bearer {token or stack.alice_token}"},
        params=params,
        timeout=30,
    )


def follow(stack, job_id: str, *, until=("succeeded", "failed", "cancelled"), timeout=180):
    """Poll the job until its status is one of `until`; returns every state seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        job = get(stack, f"/{job_id}").json()
        seen.append(job)
        if job["status"] in until:
            return seen
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.05)


def stored_files() -> set:
    return set(storage.stored_ids())


def test_a_job_reports_real_progress_and_its_transcript_in_every_format(
    jobs_stack, worker, long_speech
):
    response = submit(jobs_stack, long_speech, response_format="srt", language="en")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["object"] == "audio.transcription.job"
    assert job["status"] == "queued"
    assert (job["model"], job["task"], job["language"]) == ("whisper-tiny.en", "transcribe", "en")
    assert job["bytes"] == len(long_speech)
    assert job["filename"] == "speech.wav"
    request_id = response.headers["x-request-id"]

    seen = follow(jobs_stack, job["id"])
    final = seen[-1]
    assert final["status"] == "succeeded", (final, worker.log())
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress)
    # Progress came segment by segment as the agent decoded, not at once at the end.
    between = {p for p in progress if 0 < p < 1}
    assert len(between) >= 2, progress
    assert final["progress"] == 1
    assert 60 < final["duration"] < 100
    assert final["attempts"] == 1
    assert (final["backend"]["name"], final["backend"]["tee_type"]) == ("e2e-agent", "none")
    assert final["backend"]["confidential"] is False
    assert final["error"] is None
    assert final["expires_at"] > final["finished_at"] >= final["started_at"] >= final["created_at"]
    # The audio is gone once the job ended.
    assert uuid.UUID(job["id"]) not in stored_files()

    txt = get(jobs_stack, f"/{job['id']}/result", format="txt")
    assert txt.status_code == 200
    assert txt.headers["content-type"].startswith("text/plain")
    heard = words(txt.text)
    assert heard.count("fox") >= 18, txt.text
    srt = get(jobs_stack, f"/{job['id']}/result")  # the job's response_format
    assert srt.headers["content-type"].startswith("application/x-subrip")
    blocks = srt.text.strip().split("\n\n")
    assert len(blocks) >= 2
    assert blocks[0].splitlines()[0] == "1"
    assert re.match(r"^\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$", blocks[0].splitlines()[1])
    vtt = get(jobs_stack, f"/{job['id']}/result", format="vtt")
    assert vtt.text.startswith("WEBVTT\n\n")
    body = get(jobs_stack, f"/{job['id']}/result", format="json").json()
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert [s["id"] for s in body["segments"]] == list(range(len(blocks)))
    assert " ".join(words(body["text"])) == " ".join(heard)

    # Metered once, under the request that created the job, like any transcription.
    row = usage_row(request_id)
    assert row["endpoint"] == "audio.transcriptions"
    assert row["status"] == 200
    assert row["backend"] == "e2e-agent"

    listed = get(jobs_stack).json()
    assert listed["object"] == "list"
    assert listed["data"][0]["id"] == job["id"]


def test_a_worker_killed_mid_job_leaves_it_to_a_restarted_worker_which_stores_it_once(
    jobs_stack, worker, long_speech, queue
):
    job = submit(jobs_stack, long_speech * 1).json()
    deadline = time.monotonic() + 120
    while True:
        state = get(jobs_stack, f"/{job['id']}").json()
        if state["status"] == "running" and 0 < state["progress"] < 0.9:
            break
        assert state["status"] in ("queued", "running"), state
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    worker.kill()
    assert get(jobs_stack, f"/{job['id']}").json()["status"] == "running"
    worker.start()
    # The lease lapses; the sweeper (beat runs it every CUBEAI_TRANSCRIPTION_SWEEP_SECONDS)
    # sends the job again.
    time.sleep(float(LEASE_SECONDS) + 0.5)
    assert transcription_jobs_sweep.apply_async(queue=queue).get(timeout=30) == 1
    final = follow(jobs_stack, job["id"])[-1]
    assert final["status"] == "succeeded", (final, worker.log())
    assert final["attempts"] == 2
    stored = committed(lambda: TranscriptionJob.objects.get(pk=job["id"]))
    assert [s["id"] for s in stored.result["segments"]] == list(
        range(len(stored.result["segments"]))
    )
    assert words(stored.result["text"]).count("fox") >= 18
    # A late duplicate of the task (Redis would redeliver the killed one) changes nothing.
    transcription_job_run.apply_async((job["id"],), queue=queue).get(timeout=30)
    again = committed(lambda: TranscriptionJob.objects.get(pk=job["id"]))
    assert (again.attempts, again.finished_at, again.result) == (
        2,
        stored.finished_at,
        stored.result,
    )
    assert uuid.UUID(job["id"]) not in stored_files()


def test_cancelling_a_running_job_stops_it_and_a_finished_one_is_a_409(
    jobs_stack, worker, long_speech
):
    submitted = submit(jobs_stack, long_speech)
    job = submitted.json()
    follow(jobs_stack, job["id"], until=("running",))
    cancel = httpx.delete(
        f"{jobs_url(jobs_stack)}/{job['id']}",
        headers={"Authorization": f"Bearer {jobs_stack.alice_token}"},
    )
    cancelled_at = time.monotonic()
    assert cancel.status_code == 200
    assert cancel.json()["status"] == "cancelled"
    assert uuid.UUID(job["id"]) not in stored_files()
    # The work stops, not only the row: within about a lease the run sees the job is no
    # longer its own, closes the agent's stream and records the call as one the client left.
    row = usage_row(submitted.headers["x-request-id"])
    assert (row["endpoint"], row["status"]) == ("audio.transcriptions", 499)
    assert time.monotonic() - cancelled_at < float(LEASE_SECONDS) + 10  # generous for CI
    time.sleep(1.5)
    after = get(jobs_stack, f"/{job['id']}").json()
    assert after["status"] == "cancelled"
    result = get(jobs_stack, f"/{job['id']}/result")
    assert result.status_code == 409
    assert result.json()["error"]["code"] == "job_not_succeeded"
    again = httpx.delete(
        f"{jobs_url(jobs_stack)}/{job['id']}",
        headers={"Authorization": f"Bearer {jobs_stack.alice_token}"},
    )
    assert again.status_code == 409
    assert "cancelled" in again.json()["error"]["message"]


def test_no_log_holds_a_jobs_transcript_or_filename(
    jobs_stack, worker, speech, long_speech, gateway_dir
):
    """One job run to its end and one cancelled while it runs: the worker's and the gateway's
    logs hold neither transcript nor filename (audio is never logged either: it is binary,
    and no line carries the upload)."""
    done_name = f"patient-{uuid.uuid4().hex[:8]}-interview.wav"
    cancelled_name = f"patient-{uuid.uuid4().hex[:8]}-followup.ogg"
    done = submit(jobs_stack, speech(SENTENCE).read_bytes(), name=done_name).json()
    cancelled = submit(jobs_stack, long_speech, name=cancelled_name).json()
    assert follow(jobs_stack, done["id"])[-1]["status"] == "succeeded", worker.log()
    follow(jobs_stack, cancelled["id"], until=("running",))
    httpx.delete(
        f"{jobs_url(jobs_stack)}/{cancelled['id']}",
        headers={"Authorization": f"Bearer {jobs_stack.alice_token}"},
    )
    transcript = get(jobs_stack, f"/{done['id']}/result", format="txt").text.strip()
    assert "lazy dog" in transcript.lower()
    time.sleep(float(LEASE_SECONDS) + 1)  # the cancelled run's stop is logged too

    logs = {path: path.read_text() for path in worker.log_dir.glob("worker-*.log")}
    logs[gateway_dir / "web.log"] = (gateway_dir / "web.log").read_text()
    assert any(cancelled["id"] in text for text in logs.values()), "the worker logs its stop"
    for path, text in logs.items():
        for secret in (done_name, cancelled_name, transcript, "fox jump", "lazy dog"):
            assert secret.lower() not in text.lower(), f"{path.name} holds {secret!r}"


def test_bad_input_is_refused_clearly_and_leaves_nothing_behind(jobs_stack, worker, speech):
    wav = speech(SENTENCE).read_bytes()
    before_files = stored_files()
    before_rows = committed(lambda: TranscriptionJob.objects.count())

    not_audio = submit(jobs_stack, b"this is a text file, not audio\n" * 20, name="notes.wav")
    assert not_audio.status_code == 400
    assert not_audio.json()["error"]["code"] == "invalid_audio"
    assert not_audio.json()["error"]["param"] == "file"

    empty = submit(jobs_stack, b"")
    assert empty.status_code == 400
    assert empty.json()["error"]["param"] == "file"

    too_big = submit(jobs_stack, wav[:44] + b"\0" * (GATEWAY_MAX_AUDIO_BYTES + 10))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "invalid_request_error"

    bad_task = submit(jobs_stack, wav, task="summarise")
    assert (bad_task.status_code, bad_task.json()["error"]["param"]) == (400, "task")
    english_only = submit(jobs_stack, wav, task="translate")
    assert english_only.status_code == 400
    assert english_only.json()["error"]["param"] == "model"
    unknown_model = submit(jobs_stack, wav, model="whisper-huge")
    assert unknown_model.status_code == 404
    assert unknown_model.json()["error"]["code"] == "model_not_found"
    no_right = submit(jobs_stack, wav, token=jobs_stack.bob_token)
    assert no_right.status_code == 403
    unknown_field = submit(jobs_stack, wav, colour="blue")
    assert (unknown_field.status_code, unknown_field.json()["error"]["param"]) == (400, "colour")

    assert stored_files() == before_files
    assert committed(lambda: TranscriptionJob.objects.count()) == before_rows

    # Another domain's job is a 404, in either direction, for every route.
    job = submit(jobs_stack, wav).json()
    for path in (f"/{job['id']}", f"/{job['id']}/result"):
        other = get(jobs_stack, path, token=jobs_stack.charlie_token, domain=jobs_stack.beta)
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"
    cancel = httpx.delete(
        f"{jobs_url(jobs_stack, jobs_stack.beta)}/{job['id']}",
        headers={"Authorization": f"Bearer {jobs_stack.charlie_token}"},
    )
    assert cancel.status_code == 404
    assert get(jobs_stack, "/not-a-uuid").status_code == 404
    charlie_list = get(jobs_stack, token=jobs_stack.charlie_token, domain=jobs_stack.beta).json()
    assert job["id"] not in {j["id"] for j in charlie_list["data"]}
    follow(jobs_stack, job["id"])
    assert get(jobs_stack, f"/{job['id']}").json()["status"] == "succeeded"


def test_job_requests_count_against_the_request_limits_and_answers_carry_their_headers(
    jobs_stack, worker, speech
):
    # Found by a review: the job routes never passed the limits gate, so a token could queue
    # uploads without end and no job answer carried the `x-ratelimit-*` headers.
    wav = speech(SENTENCE).read_bytes()

    def limited_token() -> str:
        token, secret = token_services.token_issue(
            owner=User.objects.get(email="e2e-alice@example.com"),
            name="e2e-limited",
            scopes=[permissions.AUDIO_TRANSCRIPTIONS],
            expires_at=timezone.now() + datetime.timedelta(days=1),
        )
        TokenLimits.objects.create(domain=jobs_stack.alpha, token=token, requests_per_minute=3)
        return secret

    token = committed(limited_token)
    # The job's own run counts against the token's limits too: no worker takes it meanwhile.
    worker.stop()
    try:
        created = submit(jobs_stack, wav, token=token)
        assert created.status_code == 202, created.text
        job = created.json()
        assert created.headers["x-ratelimit-limit-requests"] == "3"
        assert created.headers["x-ratelimit-remaining-requests"] == "2"
        assert int(created.headers["x-ratelimit-reset-requests"].rstrip("ms")) >= 0
        read = get(jobs_stack, f"/{job['id']}", token=token)
        assert read.json()["id"] == job["id"]
        assert read.headers["x-ratelimit-remaining-requests"] == "1"
        # An error after admission carries them too.
        missing = get(jobs_stack, f"/{uuid.uuid4()}", token=token)
        assert missing.json()["error"]["code"] == "not_found"
        assert missing.headers["x-ratelimit-remaining-requests"] == "0"

        rows = committed(lambda: TranscriptionJob.objects.count())
        files = stored_files()
        refused = submit(jobs_stack, wav, token=token)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert (error["code"], error["limit"]) == ("rate_limit_exceeded", "requests_per_minute")
        assert "Retry after" in error["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        # The refused upload was never stored: no row, no audio file.
        assert committed(lambda: TranscriptionJob.objects.count()) == rows
        assert stored_files() == files
        assert get(jobs_stack, f"/{job['id']}", token=token).status_code == 429
        cancelled = httpx.delete(
            f"{jobs_url(jobs_stack)}/{job['id']}",
            headers={"Authorization": f"Bearer {jobs_stack.alice_token}"},
        )
        assert cancelled.json()["status"] == "cancelled"
    finally:
        worker.start()


def test_a_backend_failure_is_retried_with_back_off_then_fails_the_job(jobs_stack, worker, speech):
    def deploy_on_a_dead_backend():
        dead = Backend.objects.get(name="e2e-dead")
        model = Model.objects.create(name="whisper-dead", tasks=["transcription"])
        Deployment.objects.create(model=model, backend=dead, upstream_model="whisper-tiny.en")

    committed(deploy_on_a_dead_backend)
    routed(jobs_stack.base_url(jobs_stack.alpha), jobs_stack.alice_token, present=["whisper-dead"])
    started = time.monotonic()
    job = submit(jobs_stack, speech(SENTENCE).read_bytes(), model="whisper-dead").json()
    seen = follow(jobs_stack, job["id"], timeout=60)
    final = seen[-1]
    assert final["status"] == "failed", final
    assert final["attempts"] == 3
    assert final["error"]["code"] == "backend_unavailable", final["error"]
    # The job records the backend that failed it, as a finished job records the one that served.
    assert (final["backend"]["name"], final["backend"]["tee_type"]) == ("e2e-dead", "none")
    assert final["backend"]["confidential"] is False
    # Back-off of 1 s, then 2 s between the three runs.
    assert time.monotonic() - started >= 3
    retrying = [s for s in seen if s["status"] == "queued" and s["error"]]
    assert retrying and retrying[0]["error"]["retrying"] is True
    assert uuid.UUID(job["id"]) not in stored_files()


def test_a_spent_monthly_budget_fails_the_job_at_once_without_retrying(jobs_stack, worker, speech):
    # Found by a review: `insufficient_quota` is a 429, and every 429 was retried, so a job
    # spent all its attempts and back-offs on a budget that stays spent all month.
    def budgeted_token() -> str:
        token, secret = token_services.token_issue(
            owner=User.objects.get(email="e2e-alice@example.com"),
            name="e2e-budget",
            scopes=[permissions.AUDIO_TRANSCRIPTIONS, permissions.CHAT],
            expires_at=timezone.now() + datetime.timedelta(days=1),
        )
        TokenLimits.objects.create(domain=jobs_stack.alpha, token=token, monthly_token_budget=1)
        return secret

    token = committed(budgeted_token)
    spend = httpx.post(
        f"{jobs_stack.base_url(jobs_stack.alpha)}/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": "echo", "messages": [{"role": "user", "content": "spend it"}]},
        timeout=30,
    )
    assert spend.status_code == 200, spend.text
    job = submit(jobs_stack, speech(SENTENCE).read_bytes(), token=token).json()
    seen = follow(jobs_stack, job["id"], timeout=60)
    final = seen[-1]
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "insufficient_quota"
    assert final["attempts"] == 1
    assert not any(s["error"] and s["error"].get("retrying") for s in seen)
    assert uuid.UUID(job["id"]) not in stored_files()


def test_the_list_pages_with_a_cursor(jobs_stack, worker):
    first = get(jobs_stack, limit=1).json()
    assert len(first["data"]) == 1
    assert first["has_more"] is True
    second = get(jobs_stack, limit=1, after=first["last_id"]).json()
    assert second["data"][0]["id"] != first["data"][0]["id"]
    assert second["data"][0]["created_at"] <= first["data"][0]["created_at"]
    assert get(jobs_stack, limit=0).status_code == 400


def test_the_openapi_document_describes_the_extension(jobs_stack):
    document = httpx.get(f"{jobs_stack.gateway}/proxy/openapi.json").json()
    paths = document["paths"]
    create = paths["/proxy/{domain_id}/v1/audio/transcriptions/jobs"]["post"]
    assert "Cube AI extension" in create["description"]
    assert "audio:transcriptions" in create["description"]
    assert "delete" in paths["/proxy/{domain_id}/v1/audio/transcriptions/jobs/{job_id}"]
    result = paths["/proxy/{domain_id}/v1/audio/transcriptions/jobs/{job_id}/result"]["get"]
    assert "audio:translations" in result["description"]


def test_a_job_past_its_time_limit_fails_and_leaves_no_audio(
    jobs_stack, worker, long_speech, queue, tmp_path
):
    worker.stop()
    limited = Worker(
        queue, tmp_path, CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS="2", **worker.env
    ).start()
    try:
        job = submit(jobs_stack, long_speech).json()
        final = follow(jobs_stack, job["id"], timeout=60)[-1]
    finally:
        limited.stop()
        worker.start()
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "time_limit_exceeded"
    assert final["attempts"] == 1
    assert uuid.UUID(job["id"]) not in stored_files()
