"""The inference part of the management API: the registry, attestation policies, a domain's
models and usage."""

from django.urls import include, path
from rest_framework import routers

from inference import views_api

registry = routers.SimpleRouter()
registry.register("backends", views_api.BackendViewSet, basename="registry-backend")
registry.register("models", views_api.ModelViewSet, basename="registry-model")
registry.register("deployments", views_api.DeploymentViewSet, basename="registry-deployment")

urlpatterns = [
    path("registry/", include(registry.urls)),
    path(
        "backends/<path:name>/attestation/policy/",
        views_api.AttestationPolicyView.as_view(),
        name="api-attestation-policy",
    ),
    path(
        "domains/<uuid:domain_id>/models/", views_api.ModelAccessView.as_view(), name="api-models"
    ),
    path("domains/<uuid:domain_id>/usage/", views_api.UsageView.as_view(), name="api-usage"),
    path(
        "domains/<uuid:domain_id>/audit/requests/",
        views_api.RequestAuditView.as_view(),
        name="api-audit-requests",
    ),
    path(
        "domains/<uuid:domain_id>/usage/export/",
        views_api.UsageExportView.as_view(),
        name="api-usage-export",
    ),
]
