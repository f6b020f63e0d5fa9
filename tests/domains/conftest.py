"""Fixtures for the domain tests: a domain with one of everything."""

import pytest

from domains import permissions, services
from domains.models import Invitation, Role
from domains.selectors import Actor


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The cast signs in with force_login; a fast hasher keeps creating users cheap."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def admin_actor(user) -> Actor:
    return Actor(user=user, permissions=permissions.BUILTIN_ROLES[permissions.ADMIN])


@pytest.fixture
def custom_role(domain) -> Role:
    """A custom role in alice's domain."""
    return Role.objects.create(domain=domain, name="auditor", permissions=["audit:read"])


@pytest.fixture
def invitation(alice, domain) -> Invitation:
    """A pending invitation in alice's domain, to someone without an account."""
    invitation, _ = services.invitation_send(
        actor=admin_actor(alice),
        domain=domain,
        email="dora@example.com",
        role=services.role_builtin(name=permissions.MEMBER),
        link_base="http://testserver/",
    )
    return invitation
