"""Management API shapes: `XxxIn` validates a request body, `XxxOut` renders a row."""

from rest_framework import serializers

from domains import permissions
from domains.models import AuditEvent, Domain, Invitation, Membership, Role


class TagsField(serializers.ListField):
    child = serializers.CharField(min_length=1, max_length=50, allow_blank=False)

    def __init__(self, **kwargs):
        super().__init__(max_length=20, **kwargs)


class DomainOut(serializers.ModelSerializer):
    permissions = serializers.SerializerMethodField()

    class Meta:
        model = Domain
        fields = [
            "id",
            "name",
            "route",
            "status",
            "tags",
            "metadata",
            "cors_origins",
            "created_at",
            "permissions",
        ]

    def get_permissions(self, domain: Domain) -> list[str]:
        granted = self.context.get("permissions", {}).get(domain.pk, frozenset())
        return sorted(granted)


class DomainCreateIn(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    route = serializers.CharField(max_length=63)
    tags = TagsField(required=False)
    metadata = serializers.DictField(required=False)


class DomainUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    tags = TagsField(required=False)
    metadata = serializers.DictField(required=False)
    # Checked by the model's validator (`domains.models.validate_cors_origins`).
    cors_origins = serializers.ListField(
        child=serializers.CharField(max_length=300), max_length=20, required=False
    )
    status = serializers.ChoiceField(choices=Domain.Status.choices, required=False)


class RoleOut(serializers.ModelSerializer):
    builtin = serializers.BooleanField(source="is_builtin", read_only=True)

    class Meta:
        model = Role
        fields = ["id", "name", "permissions", "builtin"]


class RoleIn(serializers.Serializer):
    name = serializers.CharField(max_length=50)
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=permissions.CHOICES), allow_empty=True
    )


class RoleUpdateIn(RoleIn):
    name = serializers.CharField(max_length=50, required=False)
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=permissions.CHOICES), required=False
    )


class MemberOut(serializers.ModelSerializer):
    user_id = serializers.IntegerField(source="user.pk")
    email = serializers.EmailField(source="user.email")
    name = serializers.CharField(source="user.name")
    role = RoleOut()
    joined_at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Membership
        fields = ["user_id", "email", "name", "role", "joined_at"]


class MemberAddIn(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.IntegerField(help_text="The id of a built-in role or of this domain's.")


class MemberChangeIn(serializers.Serializer):
    role = serializers.IntegerField()


class InvitationOut(serializers.ModelSerializer):
    # Plain text in the schema: an enum here would clash with the domain's `status` enum.
    status = serializers.CharField(
        read_only=True, help_text=f"One of: {', '.join(Invitation.Status.values)}."
    )
    role = serializers.CharField(source="role.name")
    invited_by = serializers.EmailField(source="invited_by.email", default=None)
    expired = serializers.BooleanField(source="is_expired")

    class Meta:
        model = Invitation
        fields = [
            "id",
            "email",
            "role",
            "status",
            "expired",
            "invited_by",
            "created_at",
            "expires_at",
            "responded_at",
        ]


class MyInvitationOut(InvitationOut):
    domain = serializers.SerializerMethodField()

    class Meta(InvitationOut.Meta):
        fields = [*InvitationOut.Meta.fields, "domain"]

    def get_domain(self, invitation: Invitation) -> dict:
        # The invitee may learn the name and id of the domain that invites them, no more.
        return {"id": str(invitation.domain_id), "name": invitation.domain.name}


class InvitationIn(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.IntegerField()


class InvitationAnswerIn(serializers.Serializer):
    """Answer by the link's token, or by id for one of your own invitations."""

    token = serializers.CharField(max_length=100, required=False)
    id = serializers.IntegerField(required=False)

    def validate(self, attrs):
        if bool(attrs.get("token")) == bool(attrs.get("id")):
            raise serializers.ValidationError({"token": ["Give either a token or an id."]})
        return attrs


class AuditEventOut(serializers.ModelSerializer):
    actor = serializers.EmailField(source="actor.email", default=None)

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "token_id", "action", "target", "details"]


class AuditQuery(serializers.Serializer):
    """The audit log's filters (all optional)."""

    actor = serializers.EmailField(required=False, help_text="The actor's email.")
    action = serializers.CharField(
        required=False,
        max_length=50,
        help_text="An action (`token.issue`), or every action of a kind (`token.`).",
    )
    start = serializers.DateField(required=False, help_text="First day (UTC), inclusive.")
    end = serializers.DateField(required=False, help_text="Last day (UTC), inclusive.")
    outcome = serializers.ChoiceField(choices=["success", "failure"], required=False)

    def validate(self, attrs):
        if attrs.get("start") and attrs.get("end") and attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"end": ["Must not be before `start`."]})
        return attrs
