"""Bearer personal access token authentication for the management API (DRF).

The OpenAI-compatible API has its own async authentication in `inference`; both verify
through `tokens.services.token_authenticate`, so there is one implementation of the check
and of the limit on failed attempts per client address.
"""

from rest_framework import authentication, exceptions

from cubeai.exceptions import AuthenticationFailed
from domains.models import User
from tokens import services, throttle
from tokens.throttle import TooManyFailures


def bearer_value(header: str) -> str | None:
    """The credential of an `Authorization: Bearer <value>` header, or None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class PATAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer cube_pat_...`; sets request.auth to the token's Principal."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        raw = bearer_value(header)
        if raw is None:
            raise exceptions.AuthenticationFailed(AuthenticationFailed().message)
        try:
            principal = services.token_authenticate(
                raw, client_ip=request.META.get("REMOTE_ADDR") or ""
            )
        except AuthenticationFailed as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None
        except TooManyFailures as exc:
            # DRF's own 429 (with Retry-After): the request is then treated as anonymous.
            raise exceptions.Throttled(wait=exc.retry_after, detail=throttle.REFUSAL) from None
        user = User.objects.filter(pk=principal.owner_id, is_active=True).first()
        if user is None:
            raise exceptions.AuthenticationFailed(AuthenticationFailed().message)
        services.token_touch(principal=principal, ip=request.META.get("REMOTE_ADDR"))
        return user, principal

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="cube-ai"'
