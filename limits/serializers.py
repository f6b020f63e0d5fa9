"""Shapes of the limits management API (the services validate ranges and maxima)."""

from rest_framework import serializers

from limits.models import FailureMode


def _number(**kwargs):
    return serializers.IntegerField(required=False, allow_null=True, **kwargs)


class BudgetOut(serializers.Serializer):
    budget = serializers.IntegerField(allow_null=True, help_text="Tokens a month; null: none.")
    used = serializers.IntegerField(allow_null=True, help_text="Charged this month (UTC).")
    remaining = serializers.IntegerField(allow_null=True)
    percent = serializers.FloatField(allow_null=True)


class DomainLimitsIn(serializers.Serializer):
    """Fields left out stay as they are; null means the platform default (no budget)."""

    requests_per_minute = _number()
    tokens_per_minute = _number()
    monthly_token_budget = _number()
    token_requests_per_minute = _number()
    token_tokens_per_minute = _number()
    token_concurrent_streams = _number()
    token_monthly_token_budget = _number()
    failure_mode = serializers.ChoiceField(choices=FailureMode.choices, required=False)


class EffectiveOut(serializers.Serializer):
    requests_per_minute = serializers.IntegerField()
    tokens_per_minute = serializers.IntegerField()
    token_requests_per_minute = serializers.IntegerField()
    token_tokens_per_minute = serializers.IntegerField()
    token_concurrent_streams = serializers.IntegerField()


class DomainLimitsOut(serializers.Serializer):
    configured = DomainLimitsIn()
    effective = EffectiveOut()
    budget = BudgetOut()


class TokenLimitsIn(serializers.Serializer):
    requests_per_minute = _number()
    tokens_per_minute = _number()
    concurrent_streams = _number()
    monthly_token_budget = _number()


class TokenLimitsOut(TokenLimitsIn):
    token = serializers.IntegerField()
    token_name = serializers.CharField()
    own_limits = serializers.BooleanField(
        help_text="False: listed for the domain's per-token budget, no limits of its own."
    )
    budget = BudgetOut()
