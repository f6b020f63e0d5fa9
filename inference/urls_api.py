"""Management API of inference: attestation policies and usage."""

from django.urls import path

from inference import views_api

urlpatterns = [
    path("domains/<uuid:domain_id>/usage/", views_api.UsageView.as_view(), name="api-usage"),
    path(
        "backends/<path:name>/attestation/policy/",
        views_api.AttestationPolicyView.as_view(),
        name="api-attestation-policy",
    ),
]
