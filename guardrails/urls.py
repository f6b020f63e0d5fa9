"""The guardrail policy pages of a domain, under /domains/<domain_id>/guardrails/."""

from django.urls import path

from guardrails import views

urlpatterns = [
    path("domains/<uuid:domain_id>/guardrails/", views.policy_page, name="guardrails_policy"),
    path(
        "domains/<uuid:domain_id>/guardrails/versions/<id:version>/activate/",
        views.policy_activate,
        name="guardrails_activate",
    ),
]
