"""Writes to domains, memberships and roles."""

from django.db import transaction

from domains import permissions
from domains.models import Domain, Membership, Role, User


def role_builtin(*, name: str) -> Role:
    """Return a built-in role, creating it on first use."""
    role, _ = Role.objects.get_or_create(
        domain=None, name=name, defaults={"permissions": sorted(permissions.BUILTIN_ROLES[name])}
    )
    return role


@transaction.atomic
def domain_create(*, creator: User, name: str, route: str, **fields) -> Domain:
    """Create a domain; its creator becomes its first admin."""
    domain = Domain(name=name, route=route, **fields)
    domain.full_clean()
    domain.save()
    Membership.objects.create(
        user=creator, domain=domain, role=role_builtin(name=permissions.ADMIN)
    )
    return domain


def domain_set_status(*, actor: User, domain: Domain, status: str) -> Domain:
    """Enable, disable or freeze a domain. Only platform staff may touch a frozen domain."""
    from cubeai.exceptions import PermissionDenied

    if (domain.status == Domain.Status.FROZEN or status == Domain.Status.FROZEN) and not (
        actor.is_staff
    ):
        raise PermissionDenied("Only platform staff can freeze or unfreeze a domain.")
    domain.status = status
    domain.save(update_fields=["status", "updated_at"])
    return domain
