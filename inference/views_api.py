"""Attestation policies in the management API, for platform staff:
`/api/backends/<name>/attestation/policy/` (GET active + versions, POST a new version,
GET `?format=export` for the active policy as a JSON file)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, renderers, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from domains import permissions as domain_permissions
from domains.drf import DomainAPIView
from inference import attest, selectors
from inference.models import AttestationPolicy


class ExportRenderer(renderers.JSONRenderer):
    """JSON, selected by `?format=export` (DRF's format override) for the download."""

    format = "export"


class AttestationPolicyVersionOut(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="email", read_only=True)

    class Meta:
        model = AttestationPolicy
        fields = ["version", "tee_type", "document", "active", "created_by", "created_at"]


class AttestationPolicyIn(serializers.Serializer):
    document = serializers.JSONField()


class AttestationPolicyView(APIView):
    """A backend's attestation policy: the active version and every earlier one."""

    permission_classes = [permissions.IsAdminUser]
    renderer_classes = [renderers.JSONRenderer, ExportRenderer]

    @extend_schema(
        responses=OpenApiResponse(
            description="The active version and all versions, or the "
            "active policy as a JSON file with ?format=export."
        )
    )
    def get(self, request, name: str):
        backend = attest.backend_get(name=name)
        if request.query_params.get("format") == "export":
            response = Response(attest.policy_export(backend=backend))
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
        backend = attest.backend_get(name=name)
        body = AttestationPolicyIn(data=request.data)
        body.is_valid(raise_exception=True)
        row = attest.attestation_policy_set(
            backend=backend, document=body.validated_data["document"], actor=request.user
        )
        attest.reattest_later(backend=backend)
        return Response(AttestationPolicyVersionOut(row).data, status=201)


class UsageQuery(serializers.Serializer):
    days = serializers.ChoiceField(choices=[1, 7, 30, 90], default=7)


class UsageView(DomainAPIView):
    """`GET /api/domains/<id>/usage/?days=7`: totals, per model and per token.

    Members see their own tokens' usage; admins and viewers the whole domain's.
    """

    permission_by_method = {"GET": domain_permissions.USAGE_READ}

    @extend_schema(parameters=[UsageQuery], responses={200: OpenApiTypes.OBJECT})
    def get(self, request, domain_id):
        query = UsageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        own = selectors.usage_is_own_only(self.granted)
        return Response(
            selectors.usage_summary(
                domain=self.domain,
                user_id=request.user.pk if own else None,
                days=query.validated_data["days"],
            )
        )
