"""Shapes of the token management API: what it reads and what it returns."""

from rest_framework import serializers

from domains import permissions
from inference.serializers import UsageDayOut, UsageMeasuresOut, UsageModelOut
from tokens.models import Token
from tokens.services import MAX_GRACE_SECONDS


class TokenOut(serializers.ModelSerializer):
    """A token as the API shows it: never its secret or digest."""

    status = serializers.CharField(read_only=True)
    prefix = serializers.CharField(source="display", read_only=True)
    domains = serializers.SerializerMethodField()

    class Meta:
        model = Token
        fields = (
            "id",
            "name",
            "description",
            "prefix",
            "status",
            "scopes",
            "all_domains",
            "domains",
            "expires_at",
            "created_at",
            "rotated_at",
            "last_used_at",
            "last_used_ip",
            "revoked_at",
        )
        read_only_fields = fields

    def get_domains(self, token: Token) -> list[str]:
        return [str(domain.pk) for domain in token.domains.all()]


class TokenWithSecretOut(TokenOut):
    """The response to create and rotate: the only place the secret ever appears."""

    token = serializers.CharField(read_only=True, source="secret")

    class Meta(TokenOut.Meta):
        fields = (*TokenOut.Meta.fields, "token")
        read_only_fields = fields


class TokenCreateIn(serializers.Serializer):
    """Parse a create request; `tokens.services.token_issue` decides what is allowed.

    `domains` omitted or null means all of the owner's domains. The expiry is
    `expires_at`, or `expires_in_days`, or by default `CUBEAI_TOKEN_DEFAULT_DAYS`.
    """

    name = serializers.CharField(max_length=100, allow_blank=True, trim_whitespace=False)
    description = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, default=""
    )
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=50),
        allow_empty=True,
        max_length=len(permissions.ALL) * 2,
    )
    domains = serializers.ListField(
        child=serializers.UUIDField(), required=False, allow_null=True, default=None
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    expires_in_days = serializers.IntegerField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict) -> dict:
        if attrs["expires_at"] is not None and attrs["expires_in_days"] is not None:
            raise serializers.ValidationError(
                {"expires_at": ["Give expires_at or expires_in_days, not both."]}
            )
        return attrs


class TokenRotateIn(serializers.Serializer):
    """How long the old secret keeps working: 0 (default) stops it at once."""

    grace_seconds = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=MAX_GRACE_SECONDS
    )


class UsageDomainOut(UsageMeasuresOut):
    domain_id = serializers.UUIDField()
    domain_name = serializers.CharField()


class TokenUsageReportOut(serializers.Serializer):
    """One token's usage in every domain it was used in."""

    start = serializers.DateField()
    end = serializers.DateField()
    days = serializers.IntegerField()
    scope = serializers.ChoiceField(choices=["token"])
    totals = UsageMeasuresOut()
    series = UsageDayOut(many=True)
    by_domain = UsageDomainOut(many=True)
    by_model = UsageModelOut(many=True)
