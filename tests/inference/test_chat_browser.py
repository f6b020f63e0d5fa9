"""The chat page in real headless Chromium against the real ASGI server (uvicorn) and the
real agent: sign in, open the chat from the domain's tabs, send with Enter, watch the reply
arrive token by token, read its figures, stop a reply mid-stream; model output that looks
like HTML stays text. A screenshot of the page is saved to `artifacts/screenshots/chat.png`
(git-ignored) for a person to look at.
"""

import time
from pathlib import Path

import pytest
from django.conf import settings

from domains import services
from domains.models import User
from inference.models import Backend, Deployment, Model
from tests.conftest import PASSWORD
from tests.inference.conftest import real_agent_backend

CHROMIUM = Path("/usr/bin/chromium")
SMOL = "smollm2-135m-instruct"
SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.models,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium."
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def chat_domain(agent_url, fake_upstream_url):
    """A domain of a user signing in with a password, the real chat model and two of the
    fake's: `slow-stream` (a chunk every 0.5 s, to stop) and `echo` (answers with what it
    received, to check that markup in model output stays text).

    Set up before the browser: while Playwright's sync API runs, this thread has an event
    loop, and Django refuses database calls from it."""
    user = User.objects.create_user("chat-browser@example.com", PASSWORD, name="Chatty")
    domain = services.domain_create(creator=user, name="Chat Browser", route="chat-browser")
    agent = real_agent_backend("chat-browser-agent", agent_url)
    fake = Backend.objects.create(
        name="chat-browser-fake",
        base_url=f"{fake_upstream_url}/v1",
        kind="openai",
        allow_not_confidential=True,
    )
    smol = Model.objects.create(name=SMOL, tasks=["chat", "completion"], context_length=8192)
    Deployment.objects.create(model=smol, backend=agent, upstream_model=SMOL)
    for name in ("slow-stream", "echo"):
        model = Model.objects.create(name=name, tasks=["chat"], context_length=2048)
        Deployment.objects.create(model=model, backend=fake, upstream_model=name)
    return domain


@pytest.fixture
def page(chat_domain, live_server_process):
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
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _last_reply(page):
    return page.locator("li.chat-assistant").last


def test_chat_streams_token_by_token_stops_and_renders_model_output_as_text(
    chat_domain, page, live_server_process
):
    server = live_server_process
    token_frames: list[float] = []

    def watch(ws):
        def on_frame(payload):
            if '"type":"token"' in str(payload):
                token_frames.append(time.perf_counter())

        ws.on("framereceived", on_frame)

    page.on("websocket", watch)
    page.goto(f"{server}/signin/")
    page.fill("input[name=username]", "chat-browser@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]:has-text('Sign in')")
    page.goto(f"{server}/domains/{chat_domain.pk}/")
    page.click("nav.tabs >> text=Chat")
    assert page.url == f"{server}/domains/{chat_domain.pk}/chat/"
    models = page.locator("#chat-model option").all_inner_texts()
    assert models == ["echo", "slow-stream", SMOL]
    # The server's routing snapshot picks up the new models within its refresh period.
    time.sleep(settings.CUBEAI_ROUTING_REFRESH_SECONDS + 0.5)

    # Shift+Enter adds a line; Enter sends.
    page.select_option("#chat-model", SMOL)
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", "48")
    page.click("#chat-input")
    page.keyboard.type("Tell me about the sea.")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("Answer in two sentences.")
    assert page.input_value("#chat-input") == "Tell me about the sea.\nAnswer in two sentences."
    assert page.locator("li.chat-user").count() == 0
    page.keyboard.press("Enter")
    reply = _last_reply(page)
    # Tokens appear one after another: the page shows a part of the reply while it streams.
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll('li.chat-assistant')].pop();"
        " return r && r.dataset.state === 'streaming' && Number(r.dataset.tokens) >= 3; }"
    )
    partial = reply.locator(".chat-body").inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('li.chat-assistant')].pop().dataset.state === 'end'"
    )
    whole = reply.locator(".chat-body").inner_text()
    assert partial and len(partial) < len(whole)
    assert len(token_frames) >= 5 and token_frames[-1] - token_frames[0] > 0.05
    figures = reply.locator(".chat-figures").inner_text()
    for label in ("Time to first token", "Speed", "Prompt tokens", "Completion tokens"):
        assert label in figures
    backend = reply.locator(".chat-backend").inner_text()
    assert "chat-browser-agent" in backend and "not confidential" in backend

    # Stop a reply in the middle: the slow model sends a chunk every 0.5 s.
    page.select_option("#chat-model", "slow-stream")
    page.fill("#chat-input", "Go slowly.")
    page.click("#chat-send")
    page.wait_for_function(
        "() => Number([...document.querySelectorAll('li.chat-assistant')].pop()"
        ".dataset.tokens) >= 1"
    )
    page.click("#chat-stop")
    stopped = _last_reply(page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('li.chat-assistant')].pop().dataset.state"
        " === 'stopped'"
    )
    assert "stopped" in stopped.locator(".chat-figures").inner_text()
    assert stopped.locator(".chat-body").inner_text().startswith("one")
    assert page.is_enabled("#chat-send") and not page.is_enabled("#chat-stop")

    # Markup in model output stays text: the echo model answers with what it received.
    page.select_option("#chat-model", "echo")
    page.fill("#chat-input", 'Say <img src=x onerror="window.pwned=1"> and **bold** and `code`')
    page.click("#chat-send")
    page.wait_for_function(
        "() => [...document.querySelectorAll('li.chat-assistant')].pop().dataset.state === 'end'"
    )
    echoed = _last_reply(page)
    assert "<img src=x" in echoed.locator(".chat-body").inner_text()
    assert echoed.locator(".chat-body img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert echoed.locator(".chat-body strong").inner_text() == "bold"
    assert echoed.locator(".chat-body code").first.inner_text() == "code"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)
