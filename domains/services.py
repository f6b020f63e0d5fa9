"""Writes to domains, memberships, roles and invitations, each audited.

Every service validates everything before it writes and runs in one transaction, so a
refused request leaves no partial rows. Services check the actor's rights themselves,
whatever the entry point (page, API, admin action): an actor may only grant, or touch,
rights it holds itself, so a token can never widen its own rights.
"""

import datetime
import hashlib
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from cubeai.exceptions import Conflict, DomainError, NotFound, PermissionDenied
from cubeai.lib.batches import delete_in_batches
from domains import permissions
from domains.models import AuditEvent, Domain, Invitation, Membership, Role, User
from domains.selectors import Actor, is_admin_role

INVITATION_DAYS = getattr(settings, "CUBEAI_INVITATION_DAYS", 7)


class Invalid(DomainError):
    """The request has invalid fields; `errors` maps each field to its messages."""

    status = 400
    code = "invalid_request"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def _invalid_from(exc: ValidationError) -> Invalid:
    if hasattr(exc, "error_dict"):
        return Invalid({field: list(messages) for field, messages in exc.message_dict.items()})
    return Invalid({"non_field_errors": list(exc.messages)})


def _full_clean(instance, **kwargs) -> None:
    try:
        instance.full_clean(**kwargs)
    except ValidationError as exc:
        raise _invalid_from(exc) from None


def require_permission(actor: Actor, permission: str) -> None:
    """Raise PermissionDenied unless the actor holds `permission` in the domain."""
    if not actor.has(permission):
        raise PermissionDenied(f"This needs the {permission} permission.")


def _lock(domain: Domain) -> Domain:
    """Lock the domain row so concurrent membership changes run one after the other."""
    locked = Domain.objects.select_for_update().filter(pk=domain.pk, deleted_at=None).first()
    if locked is None:
        raise NotFound("No such domain.")
    return locked


def domain_writable(actor: Actor, domain: Domain) -> Domain:
    """Lock the domain for a change; a frozen domain is changed only by platform staff."""
    domain = _lock(domain)
    if domain.status == Domain.Status.FROZEN and not actor.user.is_staff:
        raise PermissionDenied("This domain is frozen; only platform staff can change it.")
    return domain


def _grantable(actor: Actor, granted: frozenset[str] | set[str], *, param: str) -> None:
    missing = set(granted) - actor.permissions
    if missing:
        raise PermissionDenied(
            f"You cannot grant permissions you do not hold: {', '.join(sorted(missing))}.",
            param=param,
        )


def _usable_role(domain: Domain, role: Role, *, param: str = "role") -> Role:
    if role.domain_id is not None and role.domain_id != domain.pk:
        raise Invalid({param: ["Choose a role of this domain."]})
    return role


def audit_record(
    actor: Actor | None,
    domain: Domain,
    action: str,
    target: str = "",
    *,
    user: User | None = None,
    **details,
) -> None:
    """Append an administrative action to the domain's audit trail (never any content)."""
    AuditEvent.objects.create(
        domain=domain,
        actor=actor.user if actor else user,
        token_id=actor.token_id if actor else None,
        action=action,
        target=target[:200],
        details=details,
    )


def _admin_count(domain: Domain, *, replacing: dict[int, Role] | None = None) -> int:
    """How many admins the domain has once `replacing` (membership id → role) applies."""
    replacing = replacing or {}
    count = 0
    for membership in Membership.objects.filter(domain=domain).select_related("role"):
        role = replacing.get(membership.pk, membership.role)
        if role is not None and is_admin_role(role):
            count += 1
    return count


def _keep_an_admin(domain: Domain, *, replacing: dict[int, Role | None], param: str) -> None:
    if _admin_count(domain) and not _admin_count(domain, replacing=replacing):
        raise Conflict("A domain must keep at least one admin.", param=param)


# Built-in roles ------------------------------------------------------------------------


def role_builtin(*, name: str) -> Role:
    """Return a built-in role, creating it on first use."""
    role, _ = Role.objects.get_or_create(
        domain=None, name=name, defaults={"permissions": sorted(permissions.BUILTIN_ROLES[name])}
    )
    return role


# Domains -------------------------------------------------------------------------------


@transaction.atomic
def domain_create(
    *,
    creator: User,
    name: str,
    route: str,
    tags: list | None = None,
    metadata: dict | None = None,
) -> Domain:
    """Create a domain; its creator becomes its first admin."""
    domain = Domain(
        name=(name or "").strip(),
        route=route,
        tags=tags if tags is not None else [],
        metadata=metadata if metadata is not None else {},
    )
    _full_clean(domain)
    try:
        # A savepoint, so a lost race on the route leaves the outer transaction usable.
        with transaction.atomic():
            domain.save()
    except IntegrityError:
        raise Invalid({"route": ["This route is taken."]}) from None
    role = role_builtin(name=permissions.ADMIN)
    Membership.objects.create(user=creator, domain=domain, role=role)
    audit_record(None, domain, "domain.create", domain.route, user=creator, name=domain.name)
    return domain


@transaction.atomic
def domain_update(
    *,
    actor: Actor,
    domain: Domain,
    name: str | None = None,
    tags: list | None = None,
    metadata: dict | None = None,
    cors_origins: list | None = None,
) -> Domain:
    """Rename a domain or change its tags, metadata and allowed browser origins (CORS). The
    route never changes."""
    require_permission(actor, permissions.DOMAIN_MANAGE)
    domain = domain_writable(actor, domain)
    changed = []
    fields = (("name", name), ("tags", tags), ("metadata", metadata))
    for field, value in (*fields, ("cors_origins", cors_origins)):
        if value is None:
            continue
        if field == "name":
            value = value.strip()
        if getattr(domain, field) != value:
            setattr(domain, field, value)
            changed.append(field)
    _full_clean(domain, validate_unique=False)
    if changed:
        domain.save(update_fields=[*changed, "updated_at"])
        audit_record(actor, domain, "domain.update", domain.route, fields=changed)
    return domain


@transaction.atomic
def domain_set_status(*, actor: Actor, domain: Domain, status: str) -> Domain:
    """Enable, disable or freeze a domain. Only platform staff may touch a frozen domain."""
    if status not in Domain.Status.values:
        raise Invalid({"status": [f"Choose one of {', '.join(Domain.Status.values)}."]})
    domain = _lock(domain)
    if Domain.Status.FROZEN in (domain.status, status) and not actor.user.is_staff:
        raise PermissionDenied("Only platform staff can freeze or unfreeze a domain.")
    require_permission(actor, permissions.DOMAIN_MANAGE)
    if domain.status != status:
        previous, domain.status = domain.status, status
        domain.save(update_fields=["status", "updated_at"])
        audit_record(actor, domain, "domain.status", domain.route, old=previous, new=status)
    return domain


@transaction.atomic
def domain_delete(*, actor: Actor, domain: Domain) -> Domain:
    """Delete a domain softly: it disappears for everyone, and its route is never reused."""
    require_permission(actor, permissions.DOMAIN_MANAGE)
    domain = domain_writable(actor, domain)
    domain.deleted_at = timezone.now()
    domain.save(update_fields=["deleted_at", "updated_at"])
    Invitation.objects.filter(domain=domain, status=Invitation.Status.PENDING).update(
        status=Invitation.Status.REVOKED, responded_at=domain.deleted_at
    )
    audit_record(actor, domain, "domain.delete", domain.route)
    return domain


# Members -------------------------------------------------------------------------------


def _may_touch(actor: Actor, membership: Membership) -> None:
    """Nobody changes a member who holds rights the actor does not hold."""
    if not membership.role.permission_set <= actor.permissions:
        raise PermissionDenied("This member holds rights that you do not hold.")


@transaction.atomic
def member_add(*, actor: Actor, domain: Domain, email: str, role: Role) -> Membership:
    """Add an existing user to a domain with a role."""
    require_permission(actor, permissions.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    _usable_role(domain, role)
    _grantable(actor, role.permission_set, param="role")
    user = User.objects.filter(email__iexact=(email or "").strip(), is_active=True).first()
    if user is None:
        raise Invalid({"email": ["No user has this email address; send an invitation instead."]})
    if Membership.objects.filter(domain=domain, user=user).exists():
        raise Conflict("This user is already a member.", param="email")
    membership = Membership.objects.create(domain=domain, user=user, role=role)
    # An invitation to someone who is now a member has nothing left to offer.
    Invitation.objects.filter(
        domain=domain, email__iexact=user.email, status=Invitation.Status.PENDING
    ).update(status=Invitation.Status.REVOKED, responded_at=timezone.now())
    audit_record(actor, domain, "member.add", user.email, role=role.name)
    return membership


def _locked_member(domain: Domain, membership: Membership) -> Membership:
    """The membership re-read under the domain's lock; gone meanwhile is a 404, not a 500."""
    fresh = (
        Membership.objects.select_related("role", "user")
        .filter(pk=membership.pk, domain=domain)
        .first()
    )
    if fresh is None:
        raise NotFound("No such member.")
    return fresh


def _locked_invitation(domain: Domain, invitation: Invitation) -> Invitation:
    """The invitation, locked; gone meanwhile is a 404, not a 500."""
    fresh = Invitation.objects.select_for_update().filter(pk=invitation.pk, domain=domain).first()
    if fresh is None:
        raise NotFound("No such invitation.")
    return fresh


@transaction.atomic
def member_change_role(
    *, actor: Actor, domain: Domain, membership: Membership, role: Role
) -> Membership:
    """Give a member another role; it applies from their next request."""
    require_permission(actor, permissions.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    membership = _locked_member(domain, membership)
    _usable_role(domain, role)
    _may_touch(actor, membership)
    _grantable(actor, role.permission_set, param="role")
    _keep_an_admin(domain, replacing={membership.pk: role}, param="role")
    if membership.role_id != role.pk:
        previous = membership.role.name
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(
            actor, domain, "member.role", membership.user.email, old=previous, new=role.name
        )
    return membership


@transaction.atomic
def member_remove(*, actor: Actor, domain: Domain, membership: Membership) -> None:
    """Remove a member from a domain; the last admin cannot be removed."""
    require_permission(actor, permissions.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    membership = _locked_member(domain, membership)
    _may_touch(actor, membership)
    _keep_an_admin(domain, replacing={membership.pk: None}, param="user")
    email = membership.user.email
    membership.delete()
    audit_record(actor, domain, "member.remove", email)


# Roles ---------------------------------------------------------------------------------


def _validate_role(
    domain: Domain, *, name: str, granted: list[str], role: Role | None = None
) -> tuple[str, list[str]]:
    errors: dict[str, list[str]] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = ["A name is required."]
    elif len(name) > 50:
        errors["name"] = ["At most 50 characters."]
    elif name.lower() in permissions.BUILTIN_ROLES:
        errors["name"] = ["This name belongs to a built-in role."]
    elif (
        Role.objects.filter(domain=domain, name__iexact=name)
        .exclude(pk=role.pk if role else None)
        .exists()
    ):
        errors["name"] = ["This domain already has a role with this name."]
    if not isinstance(granted, list | tuple | set | frozenset) or not all(
        isinstance(p, str) for p in granted
    ):
        errors["permissions"] = ["Give a list of permissions."]
    else:
        unknown = set(granted) - set(permissions.ALL)
        if unknown:
            errors["permissions"] = [f"Unknown permissions: {', '.join(sorted(unknown))}."]
    if errors:
        raise Invalid(errors)
    return name, sorted(set(granted))


@transaction.atomic
def role_create(*, actor: Actor, domain: Domain, name: str, permissions: list[str]) -> Role:
    """Define a custom role: a named set of permissions, usable only in this domain."""
    from domains import permissions as perms

    require_permission(actor, perms.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    name, granted = _validate_role(domain, name=name, granted=permissions)
    _grantable(actor, set(granted), param="permissions")
    role = Role.objects.create(domain=domain, name=name, permissions=granted)
    audit_record(actor, domain, "role.create", name, permissions=granted)
    return role


@transaction.atomic
def role_update(
    *,
    actor: Actor,
    domain: Domain,
    role: Role,
    name: str | None = None,
    permissions: list[str] | None = None,
) -> Role:
    """Rename a custom role or change its permissions; members holding it follow at once."""
    from domains import permissions as perms

    require_permission(actor, perms.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    _custom(domain, role)
    if not role.permission_set <= actor.permissions:
        raise PermissionDenied("This role holds rights that you do not hold.")
    name, granted = _validate_role(
        domain,
        name=role.name if name is None else name,
        granted=role.permissions if permissions is None else permissions,
        role=role,
    )
    _grantable(actor, set(granted), param="permissions")
    new = Role(pk=role.pk, domain=domain, name=name, permissions=granted)
    holders = Membership.objects.filter(domain=domain, role=role).values_list("pk", flat=True)
    _keep_an_admin(domain, replacing=dict.fromkeys(holders, new), param="permissions")
    old = sorted(role.permissions)
    role.name, role.permissions = name, granted
    role.save(update_fields=["name", "permissions"])
    audit_record(actor, domain, "role.update", name, old=old, new=granted)
    return role


@transaction.atomic
def role_delete(*, actor: Actor, domain: Domain, role: Role) -> None:
    """Delete a custom role that no member or pending invitation uses."""
    require_permission(actor, permissions.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    _custom(domain, role)
    if not role.permission_set <= actor.permissions:
        raise PermissionDenied("This role holds rights that you do not hold.")
    if (
        role.memberships.exists()
        or role.invitations.filter(status=Invitation.Status.PENDING).exists()
    ):
        raise Conflict("Members or pending invitations still use this role.", param="role")
    name = role.name
    # Answered invitations keep a reference to their role; they go with it.
    role.invitations.exclude(status=Invitation.Status.PENDING).delete()
    role.delete()
    audit_record(actor, domain, "role.delete", name)


def _custom(domain: Domain, role: Role) -> None:
    if role.domain_id is None:
        raise PermissionDenied("Built-in roles cannot be changed.", param="role")
    if role.domain_id != domain.pk:
        raise NotFound("No such role.")


# Invitations ---------------------------------------------------------------------------


def invitation_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_link_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, invitation_digest(token)


def _send_invitation_mail(invitation: Invitation, *, token: str, link_base: str) -> None:
    link = link_base.rstrip("/") + reverse("invitation_link", args=[token])
    inviter = invitation.invited_by.get_full_name() if invitation.invited_by else "An admin"
    send_mail(
        subject=f"You are invited to {invitation.domain.name} on Cube AI",
        message=(
            f"{inviter} invited you to join the domain “{invitation.domain.name}” as "
            f"{invitation.role.name}.\n\nAccept or decline here (the link works once, until "
            f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC):\n{link}\n\n"
            "If you have no account yet, sign up with this email address first."
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )


def _check_invitee(domain: Domain, email: str) -> None:
    if Membership.objects.filter(domain=domain, user__email__iexact=email).exists():
        raise Conflict("This person is already a member.", param="email")


@transaction.atomic
def invitation_send(
    *,
    actor: Actor,
    domain: Domain,
    email: str,
    role: Role,
    link_base: str,
    days: int = INVITATION_DAYS,
) -> tuple[Invitation, str]:
    """Invite an email address with a role; returns the invitation and its link token.

    The token is mailed and returned once; only its SHA-256 digest is stored.
    """
    require_permission(actor, permissions.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise Invalid({"email": ["Enter a valid email address."]}) from None
    if len(email) > 254:
        raise Invalid({"email": ["At most 254 characters."]})
    if not 1 <= days <= 30:
        raise Invalid({"days": ["Between 1 and 30 days."]})
    _usable_role(domain, role)
    _grantable(actor, role.permission_set, param="role")
    _check_invitee(domain, email)
    pending = Invitation.objects.select_for_update().filter(
        domain=domain, email__iexact=email, status=Invitation.Status.PENDING
    )
    for earlier in pending:
        if not earlier.is_expired:
            raise Conflict(
                "This address already has a pending invitation; resend it instead.", param="email"
            )
        earlier.status = Invitation.Status.EXPIRED
        earlier.save(update_fields=["status"])
    token, digest = _new_link_token()
    invitation = Invitation.objects.create(
        domain=domain,
        email=email,
        role=role,
        invited_by=actor.user,
        token_digest=digest,
        expires_at=timezone.now() + datetime.timedelta(days=days),
    )
    _send_invitation_mail(invitation, token=token, link_base=link_base)
    audit_record(actor, domain, "invitation.send", email, role=role.name, invitation=invitation.pk)
    return invitation, token


@transaction.atomic
def invitation_resend(
    *, actor: Actor, domain: Domain, invitation: Invitation, link_base: str
) -> tuple[Invitation, str]:
    """Mail a fresh link with a fresh expiry; the previous link stops working."""
    require_permission(actor, permissions.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    invitation = _locked_invitation(domain, invitation)
    if invitation.status not in (Invitation.Status.PENDING, Invitation.Status.EXPIRED):
        raise Conflict(f"This invitation was {invitation.status}; send a new one.")
    _grantable(actor, invitation.role.permission_set, param="role")
    _check_invitee(domain, invitation.email)
    if (
        Invitation.objects.filter(
            domain=domain, email__iexact=invitation.email, status=Invitation.Status.PENDING
        )
        .exclude(pk=invitation.pk)
        .exists()
    ):
        raise Conflict("A newer invitation to this address is pending.")
    token, invitation.token_digest = _new_link_token()
    invitation.status = Invitation.Status.PENDING
    invitation.expires_at = timezone.now() + datetime.timedelta(days=INVITATION_DAYS)
    invitation.save(update_fields=["token_digest", "status", "expires_at"])
    _send_invitation_mail(invitation, token=token, link_base=link_base)
    audit_record(actor, domain, "invitation.resend", invitation.email, invitation=invitation.pk)
    return invitation, token


@transaction.atomic
def invitation_revoke(*, actor: Actor, domain: Domain, invitation: Invitation) -> Invitation:
    """Withdraw a pending invitation; its link stops working."""
    require_permission(actor, permissions.MEMBERS_MANAGE)
    domain = domain_writable(actor, domain)
    invitation = _locked_invitation(domain, invitation)
    if invitation.status != Invitation.Status.PENDING:
        raise Conflict(f"This invitation was already {invitation.status}.")
    invitation.status = Invitation.Status.REVOKED
    invitation.responded_at = timezone.now()
    invitation.save(update_fields=["status", "responded_at"])
    audit_record(actor, domain, "invitation.revoke", invitation.email, invitation=invitation.pk)
    return invitation


def _answerable(user: User, invitation: Invitation) -> Invitation:
    invitation = (
        Invitation.objects.select_for_update()
        .select_related("domain", "role")
        .filter(pk=invitation.pk, domain__deleted_at__isnull=True)
        .first()
    )
    if invitation is None:
        raise NotFound("No such invitation.")
    if invitation.email.lower() != user.email.lower():
        raise PermissionDenied("This invitation was sent to another email address.", param="token")
    if invitation.status != Invitation.Status.PENDING:
        raise Conflict(f"This invitation was already {invitation.status}.", param="token")
    if invitation.is_expired:
        raise Conflict("This invitation has expired; ask for a new one.", param="token")
    return invitation


@transaction.atomic
def invitation_accept(*, user: User, invitation: Invitation) -> Membership:
    """Join the domain with the invitation's role; the invitation cannot be used again."""
    invitation = _answerable(user, invitation)
    domain = invitation.domain
    if domain.status == Domain.Status.FROZEN:
        raise PermissionDenied("This domain is frozen.")
    if Membership.objects.filter(domain=domain, user=user).exists():
        raise Conflict("You are already a member of this domain.", param="token")
    membership = Membership.objects.create(domain=domain, user=user, role=invitation.role)
    invitation.status = Invitation.Status.ACCEPTED
    invitation.responded_at = timezone.now()
    invitation.save(update_fields=["status", "responded_at"])
    audit_record(
        None, domain, "invitation.accept", user.email, user=user, role=invitation.role.name
    )
    return membership


@transaction.atomic
def invitation_decline(*, user: User, invitation: Invitation) -> Invitation:
    """Turn an invitation down; it cannot be used afterwards."""
    invitation = _answerable(user, invitation)
    invitation.status = Invitation.Status.DECLINED
    invitation.responded_at = timezone.now()
    invitation.save(update_fields=["status", "responded_at"])
    audit_record(None, invitation.domain, "invitation.decline", user.email, user=user)
    return invitation


def invitations_purge(*, older_than_days: int, batch_size: int) -> int:
    """Delete invitations closed (answered, revoked or expired) longer ago than the retention
    period, in batches; an open invitation is never touched. Returns how many."""
    cutoff = timezone.now() - datetime.timedelta(days=older_than_days)
    closed = Q(expires_at__lt=cutoff) | (
        Q(responded_at__lt=cutoff) & ~Q(status=Invitation.Status.PENDING)
    )
    return delete_in_batches(Invitation.objects.filter(closed), batch_size=batch_size)
