"""Management API for a domain's guardrail policy: parse the body, call a service, shape it.

`GET` needs `audit:read` or `domain:manage`; changes need `domain:manage`. Outsiders get 404
(the domain gate in `domains.drf.InDomain`), tokens act within their scopes.
"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, status
from rest_framework.response import Response

from cubeai.exceptions import PermissionDenied
from domains import permissions
from domains.drf import DomainAPIView
from guardrails import services
from guardrails.serializers import PolicyIn, PolicyVersionOut, PolicyVersionSummaryOut

READERS = frozenset({permissions.AUDIT_READ, permissions.DOMAIN_MANAGE})


class PolicyAPIView(DomainAPIView):
    """Base: reading needs either `audit:read` or `domain:manage`; writing `domain:manage`."""

    permission_by_method = {"POST": permissions.DOMAIN_MANAGE}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method == "GET" and not (READERS & self.granted):
            raise PermissionDenied("This needs the audit:read or domain:manage permission.")


def _active_out(domain) -> dict:
    row = services.policy_row_active(domain=domain)
    if row is not None:
        return PolicyVersionOut(row).data
    return {
        "version": None,
        "active": True,
        "scope": "builtin",
        "created_by": None,
        "created_at": None,
        "document": services.policy_active(domain=domain).model_dump(mode="json"),
    }


class ExportRenderer(renderers.JSONRenderer):
    """`?format=export`: the policy document alone, indented, as a JSON file to keep or
    POST back (DRF reads `format` as a renderer choice, so the export is one)."""

    format = "export"

    def get_indent(self, accepted_media_type, renderer_context):
        return 2


class PolicyView(PolicyAPIView):
    """The policy in force and the version history; POST saves a new version.

    `?format=export` answers the policy in force as a JSON file, ready to POST back.
    """

    serializer_class = PolicyVersionOut

    def get_renderers(self):
        return [*super().get_renderers(), ExportRenderer()]

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["export"], required=False)],
        responses={200: dict},
    )
    def get(self, request, domain_id):
        active = _active_out(self.domain)
        if request.accepted_renderer.format == ExportRenderer.format:
            name = f"guardrails-{self.domain.route}-v{active['version'] or 'default'}.json"
            return Response(
                active["document"],
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        versions = services.policy_versions(domain=self.domain)
        return Response(
            {
                "active": active,
                "inherited": active["scope"] != "domain",
                "versions": PolicyVersionSummaryOut(versions, many=True).data,
            }
        )

    @extend_schema(request=PolicyIn, responses={201: PolicyVersionOut})
    def post(self, request, domain_id):
        serializer = PolicyIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = services.policy_save(
            domain=self.domain,
            document=serializer.validated_data["document"],
            actor=self.actor,
            activate=serializer.validated_data["activate"],
        )
        return Response(PolicyVersionOut(row).data, status=status.HTTP_201_CREATED)


class PolicyVersionView(PolicyAPIView):
    """One version, whole."""

    serializer_class = PolicyVersionOut

    def get(self, request, domain_id, version):
        row = services.policy_get(domain=self.domain, version=version)
        return Response(PolicyVersionOut(row).data)


class PolicyActivateView(PolicyAPIView):
    """Put a saved version in force (a rollback is activating an older one)."""

    serializer_class = PolicyVersionOut

    @extend_schema(request=None, responses={200: PolicyVersionOut})
    def post(self, request, domain_id, version):
        row = services.policy_activate(domain=self.domain, version=version, actor=self.actor)
        return Response(PolicyVersionOut(row).data)
