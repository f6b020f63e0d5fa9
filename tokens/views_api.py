"""Token operations in the management API.

Only a signed-in browser session may manage tokens: a request authenticated by a personal
access token gets 403 on every endpoint here, so a leaked token cannot mint, list or rotate
tokens. Each operation parses input, calls `tokens.services` and shapes the output.
"""

import datetime

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cubeai.exceptions import DomainError
from inference import usage
from inference.serializers import UsageQuery
from inference.views_api import validated_query
from tokens import services
from tokens.authentication import PATAuthentication
from tokens.models import Token
from tokens.serializers import (
    TokenCreateIn,
    TokenOut,
    TokenRotateIn,
    TokenUsageReportOut,
    TokenWithSecretOut,
)
from tokens.services import TokenInvalid


class SessionOnly(permissions.BasePermission):
    """Signed in with a browser session, not with a personal access token."""

    message = "Tokens can only be managed from a signed-in session, not with a token."

    def has_permission(self, request: Request, view) -> bool:
        return request.user.is_authenticated and isinstance(
            request.successful_authenticator, authentication.SessionAuthentication
        )


class TokenAPIView(APIView):
    """Common ground: PAT checked first (so a valid one is refused with 403), then session."""

    authentication_classes = [PATAuthentication, authentication.SessionAuthentication]
    permission_classes = [SessionOnly]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, TokenInvalid):
            return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(exc, DomainError):
            return Response({"detail": exc.message, "code": exc.code}, status=exc.status)
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # Responses may carry a secret (create, rotate) or token metadata: never cache them.
        add_never_cache_headers(response)
        return response

    def owned(self, pk: int) -> Token:
        return get_object_or_404(
            Token.objects.for_owner(self.request.user).prefetch_related("domains"), pk=pk
        )


def _with_secret(token: Token, secret: str) -> dict:
    token.secret = secret
    return TokenWithSecretOut(token).data


class TokenListCreate(TokenAPIView):
    """Your tokens; create one."""

    @extend_schema(responses=TokenOut(many=True))
    def get(self, request: Request) -> Response:
        tokens = Token.objects.for_owner(request.user).prefetch_related("domains")
        return Response(TokenOut(tokens, many=True).data)

    @extend_schema(request=TokenCreateIn, responses={201: TokenWithSecretOut})
    def post(self, request: Request) -> Response:
        data = TokenCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        domains = None
        if fields["domains"] is not None:
            domains = services.token_domains_resolve(
                owner=request.user, domain_ids=fields["domains"]
            )
        expires_at = fields["expires_at"]
        if expires_at is None:
            days = fields["expires_in_days"]
            if days is not None:
                # Out-of-range days only need to fail the service's own check, not overflow.
                days = max(-1, min(days, settings.CUBEAI_TOKEN_MAX_DAYS + 1))
            expires_at = (
                services.default_expiry()
                if days is None
                else timezone.now() + datetime.timedelta(days=days)
            )
        token, secret = services.token_issue(
            owner=request.user,
            name=fields["name"],
            description=fields["description"],
            scopes=fields["scopes"],
            domains=domains,
            expires_at=expires_at,
        )
        return Response(_with_secret(token, secret), status=status.HTTP_201_CREATED)


class TokenDetail(TokenAPIView):
    """One of your tokens; delete it."""

    @extend_schema(responses=TokenOut)
    def get(self, request: Request, pk: int) -> Response:
        return Response(TokenOut(self.owned(pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.token_delete(token=self.owned(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenRotate(TokenAPIView):
    """Give a token a new secret, shown in this response only."""

    @extend_schema(request=TokenRotateIn, responses=TokenWithSecretOut)
    def post(self, request: Request, pk: int) -> Response:
        data = TokenRotateIn(data=request.data)
        data.is_valid(raise_exception=True)
        token = self.owned(pk)
        secret = services.token_rotate(
            token=token, grace_seconds=data.validated_data["grace_seconds"]
        )
        return Response(_with_secret(token, secret))


class TokenRevoke(TokenAPIView):
    """Revoke a token: it stops working at once."""

    @extend_schema(request=None, responses=TokenOut)
    def post(self, request: Request, pk: int) -> Response:
        return Response(TokenOut(services.token_revoke(token=self.owned(pk))).data)


class TokenUsage(TokenAPIView):
    """`GET /api/tokens/<id>/usage/?days=7` (or `?start=&end=`): one of your tokens' usage
    in every domain it was used in — totals, a series per day, by domain and by model, from
    the daily aggregates (what its usage page shows)."""

    @extend_schema(parameters=[UsageQuery], responses=TokenUsageReportOut)
    def get(self, request: Request, pk: int) -> Response:
        token = self.owned(pk)
        period = validated_query(UsageQuery, request)["period"]
        report = usage.token_usage_report(token_id=token.pk, period=period)
        # One token's report has no breakdown by token or by member (always empty).
        return Response({k: v for k, v in report.items() if k not in ("by_token", "by_member")})
