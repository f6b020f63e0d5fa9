"""The domain dashboard shows only the user's own domains."""

from domains.models import Domain, Membership


def test_it_lists_only_the_users_own_domains(client, alice, domain, other_domain):
    client.force_login(alice)
    page = client.get("/domains/").content.decode()
    assert "Alice Labs" in page
    assert str(domain.pk) in page
    assert "Charlie Corp" not in page
    assert str(other_domain.pk) not in page


def test_a_member_sees_the_domain_with_their_role(client, bob, domain, other_domain):
    client.force_login(bob)
    page = client.get("/domains/").content.decode()
    assert "Alice Labs" in page
    assert "viewer" in page
    assert "Charlie Corp" not in page


def test_deleted_domains_are_not_listed(client, alice, domain):
    from django.utils import timezone

    Domain.objects.filter(pk=domain.pk).update(deleted_at=timezone.now())
    client.force_login(alice)
    assert "Alice Labs" not in client.get("/domains/").content.decode()


def test_it_creates_a_domain_and_makes_the_creator_admin(client, charlie):
    client.force_login(charlie)
    response = client.post("/domains/", {"name": "Research", "route": "research"})
    assert response.status_code == 302
    domain = Domain.objects.get(route="research")
    assert Membership.objects.get(domain=domain, user=charlie).role.name == "admin"


def test_it_refuses_a_duplicate_or_invalid_route(client, alice, domain):
    client.force_login(alice)
    for route in ("alice-labs", "Not Valid!", "-edge"):
        response = client.post("/domains/", {"name": "Again", "route": route})
        assert response.status_code == 400, route
    assert Domain.objects.count() == 1


def test_it_refuses_an_over_long_name(client, alice):
    client.force_login(alice)
    response = client.post("/domains/", {"name": "x" * 101, "route": "long"})
    assert response.status_code == 400
    assert not Domain.objects.filter(route="long").exists()
