"""Domain pages in real headless Chromium against the real ASGI server: the guardrails
page's "Activate this version now" checkbox keeps a checkbox's size, and the overview's
Copy buttons copy the domain id and the base URL and say so."""

from pathlib import Path

import pytest

from tests.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium."
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(autouse=True)
def fast_password_hashing():
    """Overrides the domain tests' fast hasher: the server process checks the password
    with the default hashers."""


@pytest.fixture
def signed_in(alice, domain, live_server_process):
    """Alice signed in on the page, in a context that may use the clipboard. Her password
    is set before the browser starts: while Playwright's sync API runs, Django refuses
    database calls from this thread."""
    from playwright.sync_api import sync_playwright

    alice.set_password(PASSWORD)
    alice.save()
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
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_process)
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            page.goto(f"{live_server_process}/signin/")
            page.fill("input[name=username]", "alice@example.com")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]:has-text('Sign in')")
            page.wait_for_url(lambda url: "/signin/" not in url)
            yield page
        finally:
            context.close()
            browser.close()


def test_the_activate_checkbox_is_a_checkbox_not_a_page_wide_bar(
    signed_in, domain, live_server_process
):
    page = signed_in
    page.goto(f"{live_server_process}/domains/{domain.pk}/guardrails/")
    boxes = page.locator("input[type=checkbox][name=activate]")
    assert boxes.count() >= 1
    for index in range(boxes.count()):
        box = boxes.nth(index)
        assert box.is_visible()
        size = box.bounding_box()
        assert size is not None and 0 < size["width"] < 40 and size["height"] < 40, size
        # Its label sits beside it, on the same line.
        label = page.locator(f"label[for='{box.get_attribute('id')}']")
        assert "Activate this version now" in label.inner_text()
        label_size = label.bounding_box()
        assert abs(label_size["y"] - size["y"]) < 30, (label_size, size)


@pytest.mark.parametrize(("target", "expected"), [("domain-id", "id"), ("base-url", "url")])
def test_the_overview_copy_buttons_copy_and_say_copied(
    signed_in, domain, live_server_process, target, expected
):
    page = signed_in
    page.goto(f"{live_server_process}/domains/{domain.pk}/")
    button = page.locator(f"button[data-copy-target={target}]")
    assert button.inner_text() == "Copy"
    button.click()
    page.wait_for_function(
        f"document.querySelector('button[data-copy-target={target}]').textContent === 'Copied'"
    )
    status = button.locator("xpath=following-sibling::span[@class='copy-status']")
    assert status.inner_text() == "Copied to the clipboard."
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.inner_text(f"#{target}").strip()
    if expected == "id":
        assert copied == str(domain.pk)
    else:
        assert copied == f"{live_server_process}/proxy/{domain.pk}/v1"
