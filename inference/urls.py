from django.urls import path

from inference import views

urlpatterns = [
    path("domains/<uuid:domain_id>/usage/", views.domain_usage, name="domain_usage"),
    path(
        "domains/<uuid:domain_id>/attestation/",
        views.domain_attestation,
        name="domain_attestation",
    ),
    path(
        "domains/<uuid:domain_id>/attestation/<int:backend_id>/evidence.json",
        views.domain_attestation_evidence,
        name="domain_attestation_evidence",
    ),
]
