"""The allowed browser origins of a domain (CORS): none by default, edited by the domain's
admins on its settings page and in the management API, and by staff in the admin; each
origin validated (https, or http on localhost; no path, no wildcard)."""

import pytest

from domains import permissions
from domains.models import Domain, Membership, Role

pytestmark = pytest.mark.django_db

BAD = [
    "*",
    "https://*.example.com",
    "https://app.example.com/",
    "https://app.example.com/path",
    "http://app.example.com",
    "HTTPS://APP.EXAMPLE.COM",
    "app.example.com",
    "https://app.example.com:123456",
    "null",
]


def test_none_by_default(domain):
    assert Domain.objects.get(pk=domain.pk).cors_origins == []


def test_admins_set_them_in_the_management_api(api, alice, domain):
    api.force_authenticate(alice)
    url = f"/api/domains/{domain.pk}/"
    good = ["https://app.example.com", "https://app.example.com:8443", "http://localhost:3000"]
    response = api.patch(url, {"cors_origins": good}, format="json")
    assert response.status_code == 200 and response.json()["cors_origins"] == good
    assert Domain.objects.get(pk=domain.pk).cors_origins == good
    for origin in BAD:
        refused = api.patch(url, {"cors_origins": [origin]}, format="json")
        assert refused.status_code == 400, origin
        assert "cors_origins" in refused.json(), origin
    assert Domain.objects.get(pk=domain.pk).cors_origins == good


def test_members_without_domain_manage_cannot(api, bob, domain):
    Membership.objects.filter(user=bob, domain=domain).update(
        role=Role.objects.get(domain=None, name=permissions.MEMBER)
    )
    api.force_authenticate(bob)
    response = api.patch(
        f"/api/domains/{domain.pk}/", {"cors_origins": ["https://a.example"]}, format="json"
    )
    assert response.status_code == 403
    assert Domain.objects.get(pk=domain.pk).cors_origins == []


def test_admins_set_them_on_the_settings_page(client, alice, domain):
    client.force_login(alice)
    url = f"/domains/{domain.pk}/settings/"
    form = {"name": domain.name, "tags": "", "metadata": "{}"}
    saved = client.post(url, {**form, "cors_origins": "https://a.example\n\nhttps://b.example\n"})
    assert saved.status_code == 302
    assert Domain.objects.get(pk=domain.pk).cors_origins == [
        "https://a.example",
        "https://b.example",
    ]
    page = client.get(url).content.decode()
    assert "Allowed browser origins" in page and "https://b.example" in page
    refused = client.post(url, {**form, "cors_origins": "https://*.example"})
    assert refused.status_code == 400
    assert "is not an origin" in refused.content.decode()
    assert Domain.objects.get(pk=domain.pk).cors_origins == [
        "https://a.example",
        "https://b.example",
    ]


def test_the_admin_validates_them(client, domain, django_user_model):
    staff = django_user_model.objects.create_superuser("root@example.com", "pw-root-1234567")
    client.force_login(staff)
    url = f"/admin/domains/domain/{domain.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200 and "cors_origins" in page.content.decode()
    data = {
        "name": domain.name,
        "status": domain.status,
        "tags": "[]",
        "metadata": "{}",
        "cors_origins": '["https://*.example"]',
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    response = client.post(url, data)
    assert response.status_code == 200 and "is not an origin" in response.content.decode()
    response = client.post(url, {**data, "cors_origins": '["https://ok.example"]'})
    assert response.status_code == 302
    assert Domain.objects.get(pk=domain.pk).cors_origins == ["https://ok.example"]
