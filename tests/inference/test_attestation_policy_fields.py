"""Pinned and open policy fields on the attestation page (headless Chromium), in the staff
policy API and in the client API, each open one with its warning."""

from pathlib import Path

import pytest
from django.test import Client

from domains import permissions
from inference.attestation import services as attestation_services
from inference.models import Backend, Deployment, Model
from tests.attestation.conftest import GENOA_MEASUREMENT
from tests.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")

# Pins Genoa's boot loader, TEE and microcode, leaves its SNP level open; refuses Milan and
# Turin by leaving them out.
DOCUMENT = {
    "measurements": [GENOA_MEASUREMENT],
    "min_tcb": {"Genoa": {"bootloader": 10, "tee": 0, "snp": "any", "microcode": 84}},
    "host_data": "00" * 32,
}
SNP_OPEN = "min_tcb.Genoa.snp: any snp SPL is accepted on Genoa"


def serving_snp_backend() -> Backend:
    """A SEV-SNP backend serving a public model, with DOCUMENT as its policy."""
    backend = Backend.objects.create(
        name="att-genoa", base_url="https://127.0.0.1:9/v1", tee_type="sev-snp"
    )
    model = Model.objects.create(name="att-genoa-chat", tasks=["chat"])
    Deployment.objects.create(model=model, backend=backend, upstream_model="x")
    attestation_services.attestation_policy_set(backend=backend, document=DOCUMENT)
    return backend


def by_field(fields: list[dict]) -> dict[str, dict]:
    return {field["field"]: field for field in fields}


@pytest.mark.django_db
def test_the_staff_api_answers_each_version_with_its_pinned_and_open_fields(alice):
    backend = serving_snp_backend()
    alice.is_staff = True
    alice.save()
    client = Client()
    client.force_login(alice)
    url = f"/api/backends/{backend.name}/attestation/policy/"

    created = client.post(
        url, {"document": {**DOCUMENT, "host_data": None}}, content_type="application/json"
    )
    listing = client.get(url).json()
    export = client.get(url + "?format=export").json()

    assert created.status_code == 201
    assert SNP_OPEN in " ".join(created.json()["warnings"])
    assert "host_data: any HOST_DATA is accepted" in created.json()["warnings"]
    first = next(v for v in listing["versions"] if v["version"] == 1)
    assert "host_data: any HOST_DATA is accepted" not in first["warnings"]
    fields = by_field(listing["active"]["policy_fields"])
    assert fields["measurements"] == {
        "field": "measurements",
        "value": [GENOA_MEASUREMENT],
        "pinned": True,
        "warning": None,
    }
    assert fields["min_tcb.Genoa.bootloader"]["pinned"] is True
    assert fields["min_tcb.Genoa.snp"]["pinned"] is False
    assert fields["min_tcb.Turin"] == {
        "field": "min_tcb.Turin",
        "value": "not accepted",
        "pinned": True,
        "warning": None,
    }
    assert export["warnings"] == listing["active"]["warnings"]
    assert by_field(export["policy_fields"])["allow_debug"]["pinned"] is True


@pytest.mark.django_db
def test_clients_see_the_open_fields_of_each_backend_serving_their_domain(domain, alice, pat):
    serving_snp_backend()

    response = Client().get(
        f"/proxy/{domain.pk}/attestation/policy",
        HTTP_AUTHORIZATION=f"Bearer {pat(alice, scopes=[permissions.ATTESTATION_READ])}",
    )

    assert response.status_code == 200, response.content
    [item] = response.json()["data"]
    assert item["backend"] == "att-genoa"
    assert SNP_OPEN in " ".join(item["warnings"])
    assert "min_tcb.Genoa.bootloader" not in " ".join(item["warnings"])
    fields = by_field(item["policy_fields"])
    assert fields["host_data"]["pinned"] is True
    assert fields["require_crl"]["pinned"] is False


@pytest.mark.django_db
def test_a_backend_without_a_policy_is_flagged(domain, alice, pat):
    backend = Backend.objects.create(
        name="att-bare", base_url="https://127.0.0.1:9/v1", tee_type="tdx"
    )
    model = Model.objects.create(name="att-bare-chat", tasks=["chat"])
    Deployment.objects.create(model=model, backend=backend, upstream_model="x")

    response = Client().get(
        f"/proxy/{domain.pk}/attestation/policy",
        HTTP_AUTHORIZATION=f"Bearer {pat(alice, scopes=[permissions.ATTESTATION_READ])}",
    )

    [item] = response.json()["data"]
    assert item["policy"] is None
    assert item["warnings"] == ["no policy: this backend cannot be attested"]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")
@pytest.mark.django_db(transaction=True)
def test_the_page_shows_pinned_and_open_fields_and_warns(domain, alice, live_server_process):
    from playwright.sync_api import sync_playwright

    # Set up before the browser: while Playwright's sync API runs, this thread has an event
    # loop, and Django refuses database calls from it.
    alice.set_password(PASSWORD)
    alice.save()
    serving_snp_backend()
    server = live_server_process

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{server}/signin/")
            page.fill("input[name=username]", "alice@example.com")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]:has-text('Sign in')")
            page.goto(f"{server}/domains/{domain.pk}/attestation/")

            section = page.locator("section", has_text="att-genoa")
            warning = section.locator(".warning-box").inner_text()
            snp_row = section.locator("tr", has_text="min_tcb.Genoa.snp").inner_text()
            bootloader_row = section.locator("tr", has_text="min_tcb.Genoa.bootloader").inner_text()
            host_row = section.locator("tr", has_text="host_data").inner_text()
            section.locator("summary:has-text('Policy document')").click()
            document = section.locator("details pre").inner_text()
        finally:
            browser.close()

    assert "open fields" in warning and SNP_OPEN in warning
    assert "open" in snp_row and "any snp SPL is accepted on Genoa" in snp_row
    assert "pinned" in bootloader_row and "10" in bootloader_row
    assert "pinned" in host_row
    assert '"snp": "any"' in document
