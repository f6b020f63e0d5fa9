"""The usage page, the overview and the tokens page in real headless Chromium against the
real ASGI server: charts drawn from a month of usage (a screenshot is saved under
`artifacts/screenshots/`, git-ignored), no sideways scrolling on a
phone, and a reload of the "token created" page that issues no second token."""

import datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from domains.models import User
from inference import metering
from inference.models import Backend, Deployment, Model
from tests.conftest import PASSWORD
from tests.inference.conftest import committed
from tokens.models import Token

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 375, "height": 740}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium."
    ),
    pytest.mark.django_db(transaction=True),
]


def artifacts() -> Path:
    folder = Path(settings.BASE_DIR) / "artifacts" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def month_of_usage(alice, bob, domain, pat):
    """A month of requests in alice's domain, by two members, three tokens, two models, a
    few errors and unknown models; alice's password is one the server can check.

    Set up before the browser: while Playwright's sync API runs, this thread has an event
    loop, and Django refuses database calls from it."""
    alice.set_password(PASSWORD)
    alice.save()
    backend = Backend.objects.create(
        name="gpu-snp", base_url="https://10.0.0.7/v1", tee_type="sev-snp",
        attestation_status="verified",
    )  # fmt: skip
    for name in ("llama-chat", "minilm-embed"):
        model = Model.objects.create(name=name, tasks=["chat"])
        Deployment.objects.create(model=model, backend=backend, upstream_model=name)
    for name in ("laptop", "ci-runner with a rather long descriptive name"):
        pat(alice, name=name)
    tokens = list(Token.objects.order_by("pk"))
    now = timezone.now()
    events = []
    for day in range(30):
        for n in range(5 + (day * 7) % 11):
            user = alice if n % 3 else bob
            events.append(
                dict(
                    domain_id=domain.pk, user_id=user.pk, token_id=tokens[n % 2].pk,
                    request_id=f"req_{day}_{n}", endpoint="chat.completions",
                    model=("llama-chat", "minilm-embed", "no-such-model")[n % 3 if n % 7 else 2],
                    status=500 if n % 9 == 8 else 200, prompt_tokens=20 + n,
                    completion_tokens=30 + 2 * n, total_tokens=50 + 3 * n,
                    latency_ms=40 + 25 * n + day, created_at=now - datetime.timedelta(days=day),
                )
            )  # fmt: skip
    metering.write(events)
    return domain


@pytest.fixture
def browser(live_server_process, month_of_usage):
    """Headless Chromium, launched once the data is there (see `month_of_usage`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
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
        try:
            yield chromium
        finally:
            chromium.close()


def signed_in(browser, server: str, **context_options):
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{server}/signin/")
    page.fill("input[name=username]", "alice@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]:has-text('Sign in')")
    page.wait_for_url(f"{server}/domains/")
    return context, page


def no_sideways_scroll(page) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    wide = page.evaluate(
        """[...document.querySelectorAll('body *')]
        .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
        .filter(el => getComputedStyle(el).position !== 'static' || !el.closest('.table-scroll'))
        .slice(0, 5).map(el => el.tagName + '.' + el.className + ' ' + Math.round(el.getBoundingClientRect().right))"""
    )
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}, {wide}"


def test_the_usage_page_draws_its_charts(browser, live_server_process, month_of_usage):
    domain, server = month_of_usage, live_server_process
    context, page = signed_in(browser, server, viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{server}/domains/{domain.pk}/usage/?days=30")
        charts = page.locator("#usage-charts svg")
        assert charts.count() == 3
        for index in range(3):
            box = charts.nth(index).bounding_box()
            assert box["width"] > 250 and box["height"] > 100
        bars = page.locator("#usage-charts rect")
        assert bars.count() == 30 * 4  # requests, errors, prompt and completion per day
        assert page.locator("#usage-charts polyline").count() == 2
        tallest = max(
            float(height) for height in page.eval_on_selector_all(
                "#usage-charts svg:first-of-type rect.c-requests",
                "rects => rects.map(r => r.getAttribute('height'))",
            )
        )  # fmt: skip
        assert tallest > 50
        text = page.inner_text("main")
        assert "unknown model" in text and "no-such-model" not in text
        assert "ci-runner with a rather long descriptive name" in text
        assert "bob@example.com" in text
        path = artifacts() / "usage-charts.png"
        page.locator("#usage-charts").screenshot(path=str(path))
        page.screenshot(path=str(artifacts() / "usage-page.png"), full_page=True)
        assert path.stat().st_size > 5_000
        with page.expect_download() as download:
            page.click("a:has-text('Download CSV')")
        assert download.value.suggested_filename.startswith("usage-alice-labs-")
    finally:
        context.close()


@pytest.mark.parametrize("path", ["/profile/tokens/", "/domains/{id}/", "/domains/{id}/usage/"])
def test_phone_width_pages_do_not_scroll_sideways(
    browser, live_server_process, month_of_usage, path
):
    domain, server = month_of_usage, live_server_process
    context, page = signed_in(browser, server, viewport=PHONE, is_mobile=True)
    try:
        page.goto(server + path.format(id=domain.pk))
        no_sideways_scroll(page)
        if path == "/profile/tokens/":
            table = page.locator("#tokens-table")
            # The table scrolls inside its own box; every row and its actions are there.
            assert table.locator("tbody tr").count() == 2
            assert table.evaluate("el => el.scrollWidth >= el.clientWidth")
            page.screenshot(path=str(artifacts() / "tokens-phone.png"), full_page=True)
    finally:
        context.close()


def test_reloading_the_token_created_page_issues_no_second_token(
    browser, live_server_process, month_of_usage
):
    server = live_server_process
    before = committed(lambda: Token.objects.count())
    context, page = signed_in(browser, server)
    try:
        page.goto(f"{server}/profile/tokens/new/")
        page.fill("input[name=name]", "reload me")
        page.check("input[name=scopes][value='models:read']")
        page.check("input[name=expiry][value='7']")
        page.click("button:has-text('Create token')")
        secret = page.inner_text("#token-secret").strip()
        assert secret.startswith("cube_pat_")
        page.reload()
        assert page.url == f"{server}/profile/tokens/"
        assert "was shown once and cannot be shown again" in page.inner_text("main")
        assert secret not in page.content()
        page.go_back()
        assert secret not in page.content()
    finally:
        context.close()
    owner = committed(lambda: User.objects.get(email="alice@example.com").pk)
    assert committed(lambda: Token.objects.filter(owner_id=owner, name="reload me").count()) == 1
    assert committed(lambda: Token.objects.count()) == before + 1
