"""Reads of tenant data; `domain_for_user` is the one gate every domain-scoped request uses."""

import datetime
import uuid
from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone

from cubeai.exceptions import NotFound, PermissionDenied
from domains import permissions
from domains.models import AuditEvent, Domain, Invitation, Membership, Role, User

# One message for every way of not finding a domain, so none of them leaks its existence.
DOMAIN_NOT_FOUND = "No such domain."


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs a management action, with the rights in force for this request."""

    user: User
    permissions: frozenset[str]
    # The personal access token used, if any; recorded in the audit trail.
    token_id: int | None = None

    @classmethod
    def staff(cls, user: User) -> "Actor":
        """Platform staff acting from the Django admin console."""
        return cls(user=user, permissions=frozenset(permissions.ALL))

    def has(self, permission: str) -> bool:
        return permission in self.permissions


def is_admin_role(role: Role) -> bool:
    """An admin manages both the domain and its members; a domain always keeps one."""
    return role.permission_set >= permissions.ADMIN_PERMISSIONS


def domain_for_user(
    *, user: User, domain_id: str | uuid.UUID, principal=None, write: bool = False
) -> tuple[Domain, frozenset[str]]:
    """Resolve a domain for this request and the rights the caller holds in it.

    Raises NotFound when the domain is unknown or deleted, the user is not a member, or
    the token (`principal`, a `tokens.services.Principal`) may not act there; raises
    PermissionDenied as `membership_rights` says. Inference is a `write`. Nothing is
    cached, so a role change takes effect on the next request.
    """
    try:
        domain_uuid = uuid.UUID(str(domain_id))
    except ValueError:
        raise NotFound(DOMAIN_NOT_FOUND) from None
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotFound(DOMAIN_NOT_FOUND)
    if principal is not None and principal.owner_id != user.pk:
        raise NotFound(DOMAIN_NOT_FOUND)
    membership = membership_for(user_id=user.pk, domain_id=domain_uuid, principal=principal)
    if membership is None:
        raise NotFound(DOMAIN_NOT_FOUND)
    return membership.domain, membership_rights(membership, principal=principal, write=write)


def membership_for(
    *, user_id: int, domain_id: str | uuid.UUID, principal=None
) -> Membership | None:
    """An active user's membership (with its domain, role and user) in a live domain, or
    None; None as well when the token (`principal`) may not act in that domain."""
    if principal is not None and not principal.may_act_in(str(domain_id)):
        return None
    return (
        Membership.objects.filter(
            user_id=user_id,
            user__is_active=True,
            domain_id=domain_id,
            domain__deleted_at__isnull=True,
        )
        .select_related("domain", "role", "user")
        .first()
    )


def membership_rights(membership: Membership, *, principal=None, write: bool) -> frozenset[str]:
    """The rights in force for a member's request: the role's permissions, narrowed to the
    token's scopes when a personal access token acts (`principal`). A token never exceeds
    its owner. This is the one place rights are computed, for pages, the management API and
    the OpenAI-compatible API alike.

    Raises PermissionDenied when the domain is disabled and the member is not an admin, or
    frozen and a non-staff member wants to change something (`write`).
    """
    domain = membership.domain
    if domain.status == Domain.Status.DISABLED and not is_admin_role(membership.role):
        raise PermissionDenied("This domain is disabled.")
    if domain.status == Domain.Status.FROZEN and write and not membership.user.is_staff:
        raise PermissionDenied("This domain is frozen; only platform staff can change it.")
    granted = membership.role.permission_set
    if principal is not None:
        granted = principal.scopes & granted
    return frozenset(granted)


def domain_list(*, user: User, principal=None) -> QuerySet[Domain]:
    """The live domains of a user, narrowed to those a token may act in."""
    domains = Domain.objects.for_user(user)
    if principal is not None and not principal.all_domains:
        domains = domains.filter(pk__in=list(principal.domain_ids))
    return domains.order_by("name")


def member_list(*, domain: Domain) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(domain=domain)
        .select_related("user", "role")
        .order_by("user__email")
    )


def member_get(*, domain: Domain, user_id: int | str) -> Membership:
    membership = (
        Membership.objects.filter(domain=domain, user_id=_int(user_id))
        .select_related("user", "role")
        .first()
    )
    if membership is None:
        raise NotFound("No such member.")
    return membership


def role_list(*, domain: Domain) -> QuerySet[Role]:
    """The roles usable in a domain: the built-in ones and the domain's own."""
    return Role.objects.filter(domain__isnull=True) | Role.objects.filter(domain=domain)


def role_get(*, domain: Domain, role_id: int | str) -> Role:
    role = role_list(domain=domain).filter(pk=_int(role_id)).first()
    if role is None:
        raise NotFound("No such role.")
    return role


def invitation_list(*, domain: Domain) -> QuerySet[Invitation]:
    return Invitation.objects.filter(domain=domain).select_related("role", "invited_by")


def invitation_get(*, domain: Domain, invitation_id: int | str) -> Invitation:
    invitation = invitation_list(domain=domain).filter(pk=_int(invitation_id)).first()
    if invitation is None:
        raise NotFound("No such invitation.")
    return invitation


def invitation_list_for_user(*, user: User) -> QuerySet[Invitation]:
    """Open invitations addressed to the user's email, in live domains."""
    return (
        Invitation.objects.filter(
            email__iexact=user.email,
            status=Invitation.Status.PENDING,
            expires_at__gt=timezone.now(),
            domain__deleted_at__isnull=True,
        )
        .select_related("domain", "role", "invited_by")
        .order_by("-created_at")
    )


def invitation_get_for_user(*, user: User, invitation_id: int | str) -> Invitation:
    """One of the user's own invitations, open or not; anyone else's is not found."""
    invitation = (
        Invitation.objects.filter(
            pk=_int(invitation_id), email__iexact=user.email, domain__deleted_at__isnull=True
        )
        .select_related("domain", "role")
        .first()
    )
    if invitation is None:
        raise NotFound("No such invitation.")
    return invitation


def invitation_for_token(*, token: str) -> Invitation:
    """The invitation a link's token belongs to; the token itself is never stored."""
    from domains.services import invitation_digest

    invitation = (
        Invitation.objects.filter(
            token_digest=invitation_digest(token), domain__deleted_at__isnull=True
        )
        .select_related("domain", "role")
        .first()
    )
    if invitation is None:
        raise NotFound("This invitation link is not valid.")
    return invitation


# Actions that record something going wrong (the audit's "failure" outcome).
AUDIT_FAILURE_ACTIONS = ("backend.attestation_failed",)


def audit_list(
    *,
    domain: Domain,
    actor: str = "",
    action: str = "",
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    outcome: str = "",
) -> QuerySet[AuditEvent]:
    """The domain's administrative audit events, newest first, filtered: by the actor's
    email (exact, case-insensitive), by action (exact, or every action of a kind with a
    trailing dot, `token.`), by days (UTC, inclusive) and by outcome (`success`,
    `failure`)."""
    events = AuditEvent.objects.filter(domain=domain).select_related("actor")
    if actor:
        events = events.filter(actor__email__iexact=actor)
    if action.endswith("."):
        events = events.filter(action__startswith=action)
    elif action:
        events = events.filter(action=action)
    if start is not None:
        events = events.filter(created_at__date__gte=start)
    if end is not None:
        events = events.filter(created_at__date__lte=end)
    if outcome == "failure":
        events = events.filter(action__in=AUDIT_FAILURE_ACTIONS)
    elif outcome == "success":
        events = events.exclude(action__in=AUDIT_FAILURE_ACTIONS)
    return events


def audit_actions(*, domain: Domain) -> list[str]:
    """The actions recorded in the domain, for the filter's choices."""
    return sorted(
        AuditEvent.objects.filter(domain=domain).values_list("action", flat=True).distinct()
    )


def _int(value: int | str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
