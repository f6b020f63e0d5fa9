"""The transcription page in real headless Chromium against the real server, a real Celery
worker and the real agent: sign in, upload speech, watch the progress bar move over the
page's WebSocket, read the transcript and download it. Screenshots go to artifacts/screenshots/.
"""

import time
from pathlib import Path

import httpx
import pytest

from tests.inference.jobs.conftest import SENTENCE

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.models,
    pytest.mark.django_db,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium."
    ),
]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def test_upload_watch_the_progress_bar_move_then_read_and_download_the_transcript(
    jobs_stack, worker, long_speech, speech, page, tmp_path
):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    audio = tmp_path / "meeting.ogg"
    audio.write_bytes(long_speech)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("just some text\n" * 50)
    server = jobs_stack.gateway
    domain = jobs_stack.alpha

    page.goto(f"{server}/signin/")
    page.fill("input[name=username]", "e2e-alice@example.com")
    page.fill("input[name=password]", "pw-alice-123456")
    page.click("button[type=submit]:has-text('Sign in')")
    page.goto(f"{server}/domains/{domain.pk}/")
    page.click("nav[aria-label=Domain] >> text=Transcriptions")
    assert page.url == f"{server}/domains/{domain.pk}/transcriptions/"

    # A file that is not audio is refused on the page, with the reason.
    page.set_input_files("input[name=file]", str(not_audio))
    page.select_option("select[name=model]", "whisper-tiny.en")
    page.click("button:has-text('Upload and transcribe')")
    assert "not audio" in page.inner_text(".field.invalid")

    page.set_input_files("input[name=file]", str(audio))
    page.select_option("select[name=model]", "whisper-tiny.en")
    page.select_option("select[name=task]", "transcribe")
    page.fill("input[name=language]", "en")
    page.select_option("select[name=response_format]", "srt")
    page.click("button:has-text('Upload and transcribe')")
    page.wait_for_selector("text=Your audio is queued.")
    job = page.locator("section.job").first
    assert "meeting.ogg" in job.inner_text()

    # The bar moves as the worker reports segments, without reloading the page.
    values = []
    deadline = time.monotonic() + 180
    # One reading per turn: read twice, the job could finish between the two.
    while (status := job.get_attribute("data-status")) != "succeeded":
        assert status in ("queued", "running"), job.inner_text()
        assert time.monotonic() < deadline, values
        value = float(job.locator("progress").get_attribute("value") or 0)
        if not values or value != values[-1]:
            values.append(value)
            if 0 < value < 1 and len([v for v in values if 0 < v < 1]) == 1:
                page.screenshot(path=str(ARTIFACTS / "transcriptions-progress.png"), full_page=True)
        time.sleep(0.05)
    between = [v for v in values if 0 < v < 1]
    assert len(between) >= 1, values
    assert values == sorted(values)

    text = job.locator("pre.job-text")
    text.wait_for(state="visible")
    page.wait_for_function("el => el.textContent.length > 0", arg=text.element_handle())
    assert text.inner_text().lower().count("fox") >= 18
    assert "NOT CONFIDENTIAL" in job.locator(".job-backend").inner_text()
    assert job.locator(".job-cancel").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "transcriptions-done.png"), full_page=True)

    with page.expect_download() as download:
        job.locator(".job-downloads a", has_text="srt").click()
    srt = Path(download.value.path()).read_text()
    assert srt.startswith("1\n00:00:")
    with page.expect_download() as download:
        job.locator(".job-downloads a", has_text="txt").click()
    txt = Path(download.value.path()).read_text()
    assert txt.strip() == text.inner_text().strip()
    assert SENTENCE.split()[1].lower() in txt.lower()


def test_a_job_made_through_the_api_appears_on_an_open_page_and_finishes_there(
    jobs_stack, worker, speech, page
):
    server = jobs_stack.gateway
    domain = jobs_stack.alpha
    page.goto(f"{server}/signin/")
    page.fill("input[name=username]", "e2e-alice@example.com")
    page.fill("input[name=password]", "pw-alice-123456")
    page.click("button[type=submit]:has-text('Sign in')")
    page.goto(f"{server}/domains/{domain.pk}/transcriptions/")
    page.wait_for_timeout(500)  # the page's socket is open

    created = httpx.post(
        f"{server}/proxy/{domain.pk}/v1/audio/transcriptions/jobs",
        headers={"Authorization": f"Bearer {jobs_stack.alice_token}"},
        files={"file": ("from-the-api.wav", speech(SENTENCE).read_bytes(), "audio/wav")},
        data={"model": "whisper-tiny.en"},
        timeout=30,
    )
    assert created.status_code == 202, created.text
    job = page.locator(f"#job-{created.json()['id']}")
    job.wait_for(state="attached", timeout=20_000)
    assert "from-the-api.wav" in job.locator(".job-name").inner_text()
    assert "whisper-tiny.en" in job.locator(".job-meta").inner_text()
    page.wait_for_function(
        "el => el.dataset.status === 'succeeded'", arg=job.element_handle(), timeout=90_000
    )
    text = job.locator("pre.job-text")
    page.wait_for_function("el => el.textContent.length > 0", arg=text.element_handle())
    assert "lazy dog" in text.inner_text().lower()
    assert job.locator(".job-downloads").is_visible()
    assert job.locator(".job-cancel").is_hidden()
