from django.urls import path

from limits import views_api as views

urlpatterns = [
    path("domains/<uuid:domain_id>/limits/", views.DomainLimitsView.as_view(), name="api-limits"),
    path(
        "domains/<uuid:domain_id>/limits/tokens/",
        views.TokenLimitsListView.as_view(),
        name="api-token-limits",
    ),
    path(
        "domains/<uuid:domain_id>/limits/tokens/<id:token_id>/",
        views.TokenLimitsDetailView.as_view(),
        name="api-token-limit",
    ),
]
