"""The management API for guardrail policies, under /api/domains/<domain_id>/guardrails/."""

from django.urls import path

from guardrails import views_api as views

urlpatterns = [
    path(
        "domains/<uuid:domain_id>/guardrails/",
        views.PolicyView.as_view(),
        name="api-guardrails",
    ),
    path(
        "domains/<uuid:domain_id>/guardrails/versions/<id:version>/",
        views.PolicyVersionView.as_view(),
        name="api-guardrails-version",
    ),
    path(
        "domains/<uuid:domain_id>/guardrails/versions/<id:version>/activate/",
        views.PolicyActivateView.as_view(),
        name="api-guardrails-activate",
    ),
]
