"""Personal access tokens: only their digests are stored."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from domains import permissions
from domains.models import Domain


class TokenQuerySet(models.QuerySet):
    """Look-ups by owner and by state."""

    def for_owner(self, owner) -> "TokenQuerySet":
        return self.filter(owner=owner)

    def active(self) -> "TokenQuerySet":
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


class Token(models.Model):
    """A personal access token: the only credential of the public API."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        EXPIRED = "expired"
        REVOKED = "revoked"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens"
    )
    name = models.CharField(max_length=100)
    description = models.TextField(max_length=1000, blank=True)
    key_id = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    pepper_id = models.CharField(max_length=16)
    # After a rotation the old secret may stay valid for a grace period.
    previous_digest = models.CharField(max_length=64, blank=True)
    previous_pepper_id = models.CharField(max_length=16, blank=True)
    previous_valid_until = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=list)
    all_domains = models.BooleanField(default=True)
    domains = models.ManyToManyField(Domain, blank=True, related_name="+")
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expiry_warned_at = models.DateTimeField(null=True, blank=True)

    objects = TokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_id})"

    def clean(self) -> None:
        unknown = set(self.scopes) - set(permissions.ALL)
        if unknown:
            raise ValidationError({"scopes": f"Unknown scopes: {sorted(unknown)}."})

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return self.Status.REVOKED
        if self.expires_at <= timezone.now():
            return self.Status.EXPIRED
        return self.Status.ACTIVE

    @property
    def expires_soon(self) -> bool:
        days = settings.CUBEAI_TOKEN_EXPIRY_WARNING_DAYS
        return self.status == self.Status.ACTIVE and (
            self.expires_at - timezone.now()
        ) <= timezone.timedelta(days=days)

    @property
    def display(self) -> str:
        """What the pages show instead of the secret."""
        return f"cube_pat_{self.key_id}_…"
