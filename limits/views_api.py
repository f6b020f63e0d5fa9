"""Management API: a domain's limits and budget, and per-token limits in it."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from cubeai.exceptions import NotFound
from domains import permissions
from domains.drf import DomainAPIView, validated
from limits import selectors, services
from limits.serializers import DomainLimitsIn, DomainLimitsOut, TokenLimitsIn, TokenLimitsOut


class DomainLimitsView(DomainAPIView):
    """The limits in force (configured and effective) and this month's budget."""

    serializer_class = DomainLimitsOut
    permission_by_method = {"GET": permissions.USAGE_READ, "PATCH": permissions.DOMAIN_MANAGE}

    @extend_schema(responses=DomainLimitsOut)
    def get(self, request, domain_id):
        return Response(selectors.domain_limits(domain=self.domain))

    @extend_schema(request=DomainLimitsIn, responses=DomainLimitsOut)
    def patch(self, request, domain_id):
        data = validated(DomainLimitsIn, request)
        services.domain_limits_set(actor=self.actor, domain=self.domain, **data)
        return Response(selectors.domain_limits(domain=self.domain))


class TokenLimitsListView(DomainAPIView):
    """Tokens with their own limits; while the domain sets a per-token monthly budget,
    every token that may act in the domain, each with its budget left this month."""

    serializer_class = TokenLimitsOut
    permission_by_method = {"GET": permissions.USAGE_READ}

    @extend_schema(responses=TokenLimitsOut(many=True))
    def get(self, request, domain_id):
        owner_id = selectors.token_limits_owner(
            domain=self.domain, user_id=request.user.pk, granted=self.granted
        )
        return Response(selectors.token_limits_list(domain=self.domain, owner_id=owner_id))


class TokenLimitsDetailView(DomainAPIView):
    """One token's limits in this domain: PUT sets them, DELETE returns it to the defaults."""

    serializer_class = TokenLimitsOut
    permission_by_method = {
        "GET": permissions.USAGE_READ,
        "PUT": permissions.DOMAIN_MANAGE,
        "DELETE": permissions.DOMAIN_MANAGE,
    }

    def _row(self, token_id: int) -> dict:
        # Another member's token reads as absent to a reader who sees only their own.
        owner_id = selectors.token_limits_owner(
            domain=self.domain, user_id=self.request.user.pk, granted=self.granted
        )
        for row in selectors.token_limits_list(domain=self.domain, owner_id=owner_id):
            if row["token"] == token_id:
                return row
        raise NotFound("No limits of this token in this domain.")

    @extend_schema(responses=TokenLimitsOut)
    def get(self, request, domain_id, token_id):
        return Response(self._row(token_id))

    @extend_schema(request=TokenLimitsIn, responses=TokenLimitsOut)
    def put(self, request, domain_id, token_id):
        data = validated(TokenLimitsIn, request)
        values = {field: data.get(field) for field in services.TOKEN_FIELDS}
        services.token_limits_set(actor=self.actor, domain=self.domain, token_id=token_id, **values)
        return Response(self._row(token_id))

    @extend_schema(responses={204: None})
    def delete(self, request, domain_id, token_id):
        services.token_limits_clear(actor=self.actor, domain=self.domain, token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
