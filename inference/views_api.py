"""The inference part of the management API (`/api/...`).

- `/api/registry/{backends,models,deployments}/`: the model registry, for platform staff;
- `/api/backends/<name>/attestation/policy/`: attestation policies, for platform staff;
- `/api/domains/<id>/models/`: the models a domain may use, and its admins' rules;
- `/api/domains/<id>/usage/`: usage, never content.

Staff routes take a browser session of a staff user only (`StaffOnly`): a personal access
token never carries staff rights.
"""

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers, viewsets
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from cubeai.lib.downloads import csv_lines
from domains import permissions
from domains.drf import APIView, DomainAPIView, StaffBrowsableMixin, StaffOnly, validated
from inference import access, audit, selectors, usage
from inference.attestation import selectors as attestation_selectors
from inference.attestation import services as attestation_services
from inference.models import AttestationPolicy, Backend, Deployment, Model
from inference.serializers import (
    AttestationPolicyIn,
    AttestationPolicyVersionOut,
    BackendSerializer,
    DeploymentSerializer,
    ModelAccessIn,
    ModelAccessOut,
    ModelSerializer,
    RequestAuditQuery,
    RequestRecordOut,
    UsageExportRowOut,
    UsageQuery,
    UsageReportOut,
)

# The registry ----------------------------------------------------------------------------


class _Registry(StaffBrowsableMixin, viewsets.ModelViewSet):
    permission_classes = [StaffOnly]

    @transaction.atomic
    def perform_create(self, serializer):
        serializer.save()

    @transaction.atomic
    def perform_update(self, serializer):
        serializer.save()


class BackendViewSet(_Registry):
    queryset = Backend.objects.all()
    serializer_class = BackendSerializer


class ModelViewSet(_Registry):
    queryset = Model.objects.all()
    serializer_class = ModelSerializer


class DeploymentViewSet(_Registry):
    queryset = Deployment.objects.select_related("model", "backend")
    serializer_class = DeploymentSerializer


# Attestation policies --------------------------------------------------------------------


class ExportRenderer(renderers.JSONRenderer):
    """JSON, selected by `?format=export` (DRF's format override) for the download."""

    format = "export"


class AttestationPolicyView(APIView):
    """A backend's attestation policy: the active version and every earlier one."""

    permission_classes = [StaffOnly]
    renderer_classes = [renderers.JSONRenderer, ExportRenderer]

    def get_renderers(self):
        return [renderer() for renderer in self.renderer_classes]

    @extend_schema(
        responses=OpenApiResponse(
            response={"type": "object", "additionalProperties": True},
            description="The active version and all versions (backend, tee_type, active, "
            "versions), or the active policy as a JSON file with ?format=export.",
        )
    )
    def get(self, request, name: str):
        backend = attestation_selectors.backend_get(name=name)
        if request.query_params.get("format") == "export":
            response = Response(attestation_selectors.policy_export(backend=backend))
            response["Content-Disposition"] = (
                f'attachment; filename="{backend.name}-attestation-policy.json"'
            )
            return response
        versions = AttestationPolicy.objects.filter(backend=backend).select_related("created_by")
        active = next((row for row in versions if row.active), None)
        return Response(
            {
                "backend": backend.name,
                "tee_type": backend.tee_type,
                "active": AttestationPolicyVersionOut(active).data if active else None,
                "versions": AttestationPolicyVersionOut(versions, many=True).data,
            }
        )

    @extend_schema(request=AttestationPolicyIn, responses={201: AttestationPolicyVersionOut})
    def post(self, request, name: str):
        backend = attestation_selectors.backend_get(name=name)
        body = validated(AttestationPolicyIn, request)
        row = attestation_services.attestation_policy_set(
            backend=backend, document=body["document"], actor=request.user
        )
        attestation_services.reattest_later(backend=backend)
        return Response(AttestationPolicyVersionOut(row).data, status=201)


# A domain's models and usage -------------------------------------------------------------


class ModelAccessView(DomainAPIView):
    """Models the domain may use; POST sets one model's rule (`allowed: null` resets it)."""

    serializer_class = ModelAccessOut
    permission_by_method = {"GET": permissions.MODELS_READ, "POST": permissions.DOMAIN_MANAGE}

    def _rows(self):
        rows = access.model_access_list(
            domain=self.domain, include_private=self.request.user.is_staff
        )
        return ModelAccessOut(rows, many=True).data

    @extend_schema(responses=ModelAccessOut(many=True))
    def get(self, request, domain_id):
        return Response(self._rows())

    @extend_schema(request=ModelAccessIn, responses=ModelAccessOut(many=True))
    def post(self, request, domain_id):
        data = validated(ModelAccessIn, request)
        access.model_access_set(actor=self.actor, domain=self.domain, **data)
        return Response(self._rows())


def validated_query(serializer_class, request) -> dict:
    """The query string validated by `serializer_class` (a 400 with field errors if not)."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class UsageView(DomainAPIView):
    """`GET /api/domains/<id>/usage/?days=7` (or `?start=&end=`): totals, a series per day,
    and breakdowns by model, token and member, from the daily aggregates.

    Members see their own tokens' usage; admins and viewers the whole domain's.
    """

    permission_by_method = {"GET": permissions.USAGE_READ}

    @extend_schema(parameters=[UsageQuery], responses={200: UsageReportOut})
    def get(self, request, domain_id):
        period = validated_query(UsageQuery, request)["period"]
        reader = selectors.usage_reader(domain=self.domain, user_id=request.user.pk)
        return Response(usage.usage_report(domain=self.domain, user_id=reader, period=period))


class CSVRenderer(renderers.BaseRenderer):
    """Rows (a list of dicts with `usage.EXPORT_COLUMNS`) as CSV; errors stay JSON."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return "".join(csv_lines(data, usage.EXPORT_COLUMNS)).encode()


class UsageExportView(DomainAPIView):
    """`GET /api/domains/<id>/usage/export/`: one row per day, model, token and member, as
    CSV (the default) or JSON (`?format=json`)."""

    permission_by_method = {"GET": permissions.USAGE_READ}
    renderer_classes = [CSVRenderer, renderers.JSONRenderer]

    def get_renderers(self):
        # Error bodies are rendered as JSON whatever was asked.
        return [CSVRenderer(), renderers.JSONRenderer()]

    def handle_exception(self, exc):
        self.request.accepted_renderer = renderers.JSONRenderer()
        self.request.accepted_media_type = "application/json"
        return super().handle_exception(exc)

    @extend_schema(
        parameters=[UsageQuery],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): UsageExportRowOut(many=True),
        },
    )
    def get(self, request, domain_id):
        period = validated_query(UsageQuery, request)["period"]
        reader = selectors.usage_reader(domain=self.domain, user_id=request.user.pk)
        rows = usage.usage_export_rows(domain=self.domain, user_id=reader, period=period)
        response = Response(rows)
        if request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = (
                f'attachment; filename="usage-{self.domain.route}-{period.start}-{period.end}.csv"'
            )
        return response


class RequestAuditPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 500


class RequestAuditView(DomainAPIView):
    """`GET /api/domains/<id>/audit/requests/`: per-request audit records (no text),
    newest first, filtered and paginated (`limit`, `offset`)."""

    permission_by_method = {"GET": permissions.AUDIT_READ}
    pagination_class = RequestAuditPagination
    serializer_class = RequestRecordOut

    @extend_schema(parameters=[RequestAuditQuery], responses=RequestRecordOut(many=True))
    def get(self, request, domain_id):
        filters = validated_query(RequestAuditQuery, request)
        page = self.paginate_queryset(audit.request_events(domain=self.domain, **filters))
        return self.get_paginated_response(list(audit.request_rows(page)))
