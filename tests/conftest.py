"""The shared test cast: alice owns a domain, bob is on it with fewer rights, charlie is not.

Charlie owns a domain of his own, so every isolation test can check both directions.
"""

import datetime

import pytest
from django.utils import timezone

from domains import permissions, services
from domains.models import Domain, Membership, User

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice@example.com", PASSWORD, name="Alice")


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob@example.com", PASSWORD, name="Bob")


@pytest.fixture
def charlie(db) -> User:
    return User.objects.create_user("charlie@example.com", PASSWORD, name="Charlie")


@pytest.fixture
def domain(alice, bob) -> Domain:
    """Alice's domain; bob is a viewer in it."""
    domain = services.domain_create(creator=alice, name="Alice Labs", route="alice-labs")
    Membership.objects.create(
        user=bob, domain=domain, role=services.role_builtin(name=permissions.VIEWER)
    )
    return domain


@pytest.fixture
def other_domain(charlie) -> Domain:
    """Charlie's domain, which alice and bob must never see."""
    return services.domain_create(creator=charlie, name="Charlie Corp", route="charlie-corp")


@pytest.fixture
def pat():
    """Issue a token: `pat(owner, scopes=..., domains=...)` returns the secret string."""
    from tokens import services as token_services

    def issue(owner: User, *, scopes=None, domains=None, days: int = 30, name: str = "test"):
        _, plaintext = token_services.token_issue(
            owner=owner,
            name=name,
            scopes=list(scopes or permissions.BUILTIN_ROLES[permissions.MEMBER]),
            domains=domains,
            expires_at=timezone.now() + datetime.timedelta(days=days),
        )
        return plaintext

    return issue
