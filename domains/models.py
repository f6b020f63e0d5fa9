"""Users, domains (tenants), roles, memberships and invitations."""

import re
import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from domains import permissions


class UserManager(BaseUserManager):
    """Creates users who sign in with their email address."""

    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra) -> "User":
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra) -> "User":
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra) -> "User":
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in with an email address."""

    email = models.EmailField(unique=True, max_length=254)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.name or self.email

    def get_short_name(self) -> str:
        return self.name or self.email.split("@")[0]


class DomainQuerySet(models.QuerySet):
    """Tenant look-ups that every view goes through."""

    def live(self) -> "DomainQuerySet":
        return self.filter(deleted_at__isnull=True)

    def for_user(self, user) -> "DomainQuerySet":
        return self.live().filter(memberships__user=user)


route_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    "Use 1-63 lowercase letters, digits and hyphens, not starting or ending with a hyphen.",
)


# An origin a browser may call the domain's OpenAI-compatible API from: https, or plain http
# on this machine only; scheme, host and port, nothing more (no path, no wildcard).
CORS_ORIGIN_RE = re.compile(
    r"^(https://[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?|http://(localhost|127\.0\.0\.1|\[::1\]))"
    r"(:[0-9]{1,5})?$"
)
MAX_CORS_ORIGINS = 20


def validate_cors_origins(value) -> None:
    """A list of at most MAX_CORS_ORIGINS distinct origins, each as a browser sends it."""
    if not isinstance(value, list) or not all(isinstance(origin, str) for origin in value):
        raise ValidationError("Origins must be a list of strings.")
    if len(value) > MAX_CORS_ORIGINS:
        raise ValidationError(f"At most {MAX_CORS_ORIGINS} origins.")
    for origin in value:
        if not CORS_ORIGIN_RE.match(origin):
            raise ValidationError(
                f"{origin[:100]!r} is not an origin: write https://host or https://host:port "
                "(lowercase, no path, no wildcard; http only for localhost)."
            )
    if len(set(value)) != len(value):
        raise ValidationError("Each origin once.")


class Domain(models.Model):
    """A tenant: everything a request touches is scoped to one domain."""

    class Status(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"
        FROZEN = "frozen"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    # The route is immutable and never reused, even after the domain is deleted.
    route = models.CharField(max_length=63, unique=True, validators=[route_validator])
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ENABLED)
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Browser origins allowed to call the OpenAI-compatible API (CORS); none by default.
    cors_origins = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_cors_origins],
        help_text="Origins (https://host[:port]) whose pages may call this domain's API.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = DomainQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not isinstance(self.tags, list) or not all(
            isinstance(tag, str) and 0 < len(tag) <= 50 for tag in self.tags
        ):
            raise ValidationError({"tags": "Tags must be a list of strings of 1-50 characters."})
        if len(self.tags) > 20:
            raise ValidationError({"tags": "At most 20 tags."})
        if not isinstance(self.metadata, dict):
            raise ValidationError({"metadata": "Metadata must be a JSON object."})

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class Role(models.Model):
    """A named set of permissions: built in (no domain) or custom to one domain."""

    domain = models.ForeignKey(
        Domain, on_delete=models.CASCADE, null=True, blank=True, related_name="roles"
    )
    name = models.CharField(max_length=50)
    permissions = models.JSONField(default=list)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "name"], name="unique_role_name_per_domain"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(domain=None), name="unique_builtin_role_name"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        unknown = set(self.permissions) - set(permissions.ALL)
        if unknown:
            raise ValidationError({"permissions": f"Unknown permissions: {sorted(unknown)}."})

    @property
    def is_builtin(self) -> bool:
        return self.domain_id is None

    @property
    def permission_set(self) -> frozenset[str]:
        return frozenset(self.permissions)


class Membership(models.Model):
    """A user's role in one domain."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="memberships")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain", "user"]
        constraints = [models.UniqueConstraint(fields=["user", "domain"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.domain} as {self.role}"


class Invitation(models.Model):
    """An offer of a role in a domain, sent to an email address, accepted once."""

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        DECLINED = "declined"
        REVOKED = "revoked"
        EXPIRED = "expired"

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="invitations")
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    # Only a SHA-256 digest of the link's token is kept, like a password reset link.
    token_digest = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["domain", "email"],
                condition=models.Q(status="pending"),
                name="unique_pending_invitation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.domain}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.PENDING and not self.is_expired


class AuditEvent(models.Model):
    """One management action in a domain: who did what to which object. Never secrets."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    # The personal access token the actor used, if any (a plain id: tokens may be deleted).
    token_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["domain", "created_at"])]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"
