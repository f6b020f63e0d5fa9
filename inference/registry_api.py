"""The model registry in the management API, for platform staff: backends, models,
deployments (`/api/registry/...`). Domain admins manage their domain's model access under
`/api/domains/<id>/models/` instead."""

from django.db import transaction
from django.urls import include, path
from rest_framework import permissions, routers, serializers, viewsets

from inference.models import Backend, Deployment, Model


class FullCleanMixin:
    """Run the model's own validation (clean, validators) before saving."""

    def validate(self, attrs):
        instance = self.Meta.model(**{**self._current(), **attrs})
        from django.core.exceptions import ValidationError

        try:
            instance.full_clean(exclude=self._exclude_from_clean())
        except ValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs

    def _current(self) -> dict:
        if self.instance is None:
            return {}
        return {
            field.name: getattr(self.instance, field.name)
            for field in self.Meta.model._meta.concrete_fields
            if not field.primary_key
        }

    def _exclude_from_clean(self) -> list[str]:
        # Uniqueness is checked by the serializer's own validators and the database.
        return ["id"]


class BackendSerializer(FullCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Backend
        fields = [
            "id", "name", "base_url", "kind", "api_key_env", "tee_type",
            "allow_not_confidential", "enabled", "healthy", "health_checked_at",
            "health_error", "attestation_status", "attested_at", "attestation_expires_at",
            "attestation_error", "pinned_key_sha256", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = [
            "healthy", "health_checked_at", "health_error", "attestation_status",
            "attested_at", "attestation_expires_at", "attestation_error",
            "pinned_key_sha256", "created_at", "updated_at",
        ]  # fmt: skip


class ModelSerializer(FullCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Model
        fields = [
            "id", "name", "tasks", "context_length", "capabilities", "public", "owned_by",
            "description", "created_at",
        ]  # fmt: skip
        read_only_fields = ["created_at"]


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", queryset=Model.objects.all())
    backend = serializers.SlugRelatedField(slug_field="name", queryset=Backend.objects.all())

    class Meta:
        model = Deployment
        fields = ["id", "model", "backend", "upstream_model", "enabled"]


class StaffOnly(permissions.BasePermission):
    """Platform operators only (a session of a staff user)."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_staff and request.auth is None)


class _Registry(viewsets.ModelViewSet):
    permission_classes = [permissions.IsAuthenticated, StaffOnly]

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


router = routers.SimpleRouter()
router.register("backends", BackendViewSet, basename="registry-backend")
router.register("models", ModelViewSet, basename="registry-model")
router.register("deployments", DeploymentViewSet, basename="registry-deployment")

urlpatterns = [path("", include(router.urls))]
