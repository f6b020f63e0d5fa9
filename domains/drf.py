"""Management API plumbing: the one exception handler, and the base views that scope a request.

Every domain-scoped API view inherits `DomainAPIView`: its permission class resolves the
domain once, through `selectors.domain_for_user`, and checks the permission the view
names for the request's method. No view repeats those checks.
"""

import logging

from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import permissions as drf_permissions
from rest_framework import renderers, serializers
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from cubeai import jsonbody
from cubeai.exceptions import DomainError, PermissionDenied
from domains import selectors
from domains.selectors import Actor

log = logging.getLogger(__name__)

# PostgreSQL or Redis away (a restart, a failover): a 503 to retry, as on the OpenAI API.
OUTAGES = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)


class JSONField(serializers.JSONField):
    """DRF's JSONField, a JSON string given in form or multipart input parsed by
    `cubeai.jsonbody.loads` (DRF's own parser recursed: about 1,000 levels were a 500)."""

    def to_internal_value(self, data):
        if self.binary or getattr(data, "is_json_string", False):
            try:
                return jsonbody.loads(data, what="value")
            except jsonbody.JSONBodyError as exc:
                raise serializers.ValidationError(str(exc)) from None
        return super().to_internal_value(data)


def exception_handler(exc, context):
    """Map the services' exceptions to HTTP (the database or Redis away: 503 with
    `Retry-After`); everything else goes to DRF's own handler.

    Field errors come back as `{field: [messages]}`, like a serializer's; other errors
    as `{"detail": message, "code": code}`.
    """
    if isinstance(exc, DomainError):
        errors = getattr(exc, "errors", None)
        if errors:
            body = dict(errors)
        elif exc.param:
            body = {exc.param: [exc.message], "detail": exc.message, "code": exc.code}
        else:
            body = {"detail": exc.message, "code": exc.code}
        return Response(body, status=exc.status, headers=exc.headers or None)
    if isinstance(exc, OUTAGES):
        # The type only: a driver's message may quote the statement's values.
        log.warning("%s: the database or Redis is unreachable", type(exc).__name__)
        set_rollback()
        body = {
            "detail": "The service is briefly unavailable; please retry.",
            "code": "service_unavailable",
        }
        return Response(body, status=503, headers={"Retry-After": "2"})
    return drf_exception_handler(exc, context)


def validated(serializer_class, request, **kwargs) -> dict:
    """The request body validated by `serializer_class` (a 400 with field errors if not)."""
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """The browsable API without the generated forms: our views are not model viewsets,
    so staff use the raw JSON form, which every view supports."""

    def get_filter_form(self, data, view, request):
        return None

    def get_rendered_html_form(self, data, view, method, request):
        return None


class StaffBrowsableMixin:
    """JSON for everyone; the browsable HTML API too, but only for platform staff.

    Also answers a missing or bad credential with 401 and `WWW-Authenticate: Bearer`:
    DRF would take the header of the first authenticator only (the session's, which has
    none), and answer 403.
    """

    def get_authenticate_header(self, request):
        for authenticator in self.get_authenticators():
            header = authenticator.authenticate_header(request)
            if header:
                return header
        return None

    def get_renderers(self):
        available = [renderers.JSONRenderer()]
        try:
            user = getattr(self.request, "user", None)
        except OUTAGES:
            # Authentication could not reach the database: the 503 is rendered as JSON
            # (DRF asks again here after the handler, and would raise past it).
            user = None
        if user is not None and user.is_authenticated and user.is_staff:
            available.append(BrowsableAPIRenderer())
        return available


class APIView(StaffBrowsableMixin, GenericAPIView):
    """Base of the management API views that are not scoped to one domain."""

    def actor_for(self, permissions: frozenset[str]) -> Actor:
        principal = self.request.auth
        return Actor(
            user=self.request.user,
            permissions=permissions,
            token_id=getattr(principal, "token_id", None),
        )


class SessionOnly(drf_permissions.BasePermission):
    """Signed in through the browser: personal access tokens may not do this."""

    message = "A personal access token cannot do this; sign in instead."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.auth is None)


class StaffOnly(drf_permissions.BasePermission):
    """Platform operators signed in through the browser: a personal access token never
    carries staff rights, whatever its scopes."""

    message = "Only platform staff, signed in, can do this."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and request.auth is None)


class InDomain(drf_permissions.BasePermission):
    """Resolve the domain of the URL once and check the permission the view requires.

    An outsider gets 404 whatever the route; a member lacking the permission gets 403.
    """

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        write = request.method not in drf_permissions.SAFE_METHODS
        domain, granted = selectors.domain_for_user(
            user=request.user,
            domain_id=view.kwargs["domain_id"],
            principal=request.auth,
            write=write,
        )
        view.domain, view.granted = domain, granted
        required = view.required_permission(request.method)
        if required is not None and required not in granted:
            raise PermissionDenied(f"This needs the {required} permission.")
        return True


class DomainAPIView(APIView):
    """Base of every view under /api/domains/<domain_id>/.

    `permission_by_method` maps an HTTP method to the permission it needs; a method left
    out needs only membership. After the permission check, `self.domain` is the domain and
    `self.actor` the caller with the rights in force.
    """

    permission_classes = [drf_permissions.IsAuthenticated, InDomain]
    permission_by_method: dict[str, str | None] = {}

    def required_permission(self, method: str) -> str | None:
        return self.permission_by_method.get(method)

    @property
    def actor(self) -> Actor:
        return self.actor_for(self.granted)
