"""Management API of attestation policies (platform staff)."""

from django.urls import path

from inference import views_api

urlpatterns = [
    path(
        "backends/<path:name>/attestation/policy/",
        views_api.AttestationPolicyView.as_view(),
        name="api-attestation-policy",
    ),
]
