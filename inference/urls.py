"""Domain pages of inference, under /domains/<domain_id>/."""

from django.urls import path

from inference import views

pages = [
    ("models/", views.domain_models, "domain_models"),
    ("models/set/", views.model_access_set, "model_access_set"),
    ("chat/", views.domain_chat, "domain_chat"),
    ("usage/", views.domain_usage, "domain_usage"),
    ("usage/export.csv", views.domain_usage_export, "domain_usage_export"),
    ("audit/requests/", views.domain_audit_requests, "domain_audit_requests"),
    (
        "audit/requests/export.csv",
        views.domain_audit_requests_export,
        "domain_audit_requests_export",
    ),
    ("attestation/", views.domain_attestation, "domain_attestation"),
    (
        "attestation/<id:backend_id>/evidence.json",
        views.domain_attestation_evidence,
        "domain_attestation_evidence",
    ),
]

urlpatterns = [
    path(f"domains/<uuid:domain_id>/{route}", view, name=name) for route, view, name in pages
]
