"""Management API shapes for guardrail policies: `XxxIn` validates a body, `XxxOut` renders."""

from rest_framework import serializers

from domains.drf import JSONField
from guardrails.models import GuardrailPolicy


class PolicyVersionOut(serializers.ModelSerializer):
    """One version of a domain's policy, with its whole document."""

    created_by = serializers.EmailField(source="created_by.email", default=None, read_only=True)
    scope = serializers.SerializerMethodField()

    class Meta:
        model = GuardrailPolicy
        fields = ["version", "active", "scope", "created_by", "created_at", "document"]

    def get_scope(self, row: GuardrailPolicy) -> str:
        return "platform" if row.domain_id is None else "domain"


class PolicyVersionSummaryOut(PolicyVersionOut):
    """A version in the history list, without its document."""

    class Meta(PolicyVersionOut.Meta):
        fields = ["version", "active", "created_by", "created_at"]


class PolicyIn(serializers.Serializer):
    """A new version: the policy document, and whether it takes effect now."""

    document = JSONField(
        help_text="The policy as guardrails.Policy JSON; its `version`, if any, is ignored."
    )
    activate = serializers.BooleanField(default=True)
