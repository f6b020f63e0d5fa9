"""Which registered models a domain may use: public by default, with per-domain rules."""

import pytest

from domains.models import User
from inference import access
from inference.models import Model, ModelAccess


@pytest.fixture
def models(db):
    public = Model.objects.create(name="llama", tasks=["chat"], public=True)
    private = Model.objects.create(name="secret-model", tasks=["chat"], public=False)
    return public, private


def _names(response) -> dict[str, bool]:
    return {row["name"]: row["allowed"] for row in response.json()}


def test_a_domain_uses_public_models_by_default(api, bob, domain, models):
    api.force_login(bob)
    response = api.get(f"/api/domains/{domain.pk}/models/")
    assert response.status_code == 200
    assert _names(response) == {"llama": True}


def test_an_admin_denies_a_public_model_and_restores_it(api, alice, domain, other_domain, models):
    public, _ = models
    api.force_login(alice)
    url = f"/api/domains/{domain.pk}/models/"
    response = api.post(url, {"model": "llama", "allowed": False}, format="json")
    assert response.status_code == 200
    assert _names(response) == {"llama": False}
    assert list(access.models_for_domain(domain)) == []
    assert list(access.models_for_domain(other_domain)) == [public]
    response = api.post(url, {"model": "llama", "allowed": None}, format="json")
    assert _names(response) == {"llama": True}
    assert not ModelAccess.objects.exists()


def test_a_private_model_is_invisible_and_cannot_be_granted_by_a_domain_admin(
    api, alice, domain, models
):
    api.force_login(alice)
    url = f"/api/domains/{domain.pk}/models/"
    response = api.post(url, {"model": "secret-model", "allowed": True}, format="json")
    assert response.status_code == 400
    assert response.json() == {"model": ["No such model."]}
    unknown = api.post(url, {"model": "nope", "allowed": True}, format="json")
    assert unknown.status_code == 400
    assert not ModelAccess.objects.exists()


def test_staff_grant_a_private_model_to_one_domain_only(api, alice, domain, other_domain, models):
    _, private = models
    staff = User.objects.create_user("ops@example.com", "x", is_staff=True)
    from domains import permissions, services
    from domains.models import Membership

    Membership.objects.create(
        user=staff, domain=domain, role=services.role_builtin(name=permissions.ADMIN)
    )
    api.force_login(staff)
    url = f"/api/domains/{domain.pk}/models/"
    assert "secret-model" in _names(api.get(url))
    response = api.post(url, {"model": "secret-model", "allowed": True}, format="json")
    assert response.status_code == 200
    api.force_login(alice)
    assert _names(api.get(url)) == {"llama": True, "secret-model": True}
    assert private not in access.models_for_domain(other_domain)


def test_the_models_page_lists_and_sets_access(client, alice, bob, domain, models):
    client.force_login(bob)
    page = client.get(f"/domains/{domain.pk}/models/").content.decode()
    assert "llama" in page
    assert "secret-model" not in page
    assert "<select" not in page
    client.force_login(alice)
    response = client.post(
        f"/domains/{domain.pk}/models/set/", {"model": "llama", "access": "deny"}
    )
    assert response.status_code == 302
    assert ModelAccess.objects.get(domain=domain).allowed is False
    bad = client.post(
        f"/domains/{domain.pk}/models/set/", {"model": "secret-model", "access": "allow"}
    )
    assert bad.status_code == 400
