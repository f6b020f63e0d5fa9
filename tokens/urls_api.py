"""Token operations in the management API (session-authenticated only)."""

from django.urls import path

from tokens import views_api

app_name = "tokens_api"

urlpatterns = [
    path("tokens/", views_api.TokenListCreate.as_view(), name="list"),
    path("tokens/<int:pk>/", views_api.TokenDetail.as_view(), name="detail"),
    path("tokens/<int:pk>/rotate/", views_api.TokenRotate.as_view(), name="rotate"),
    path("tokens/<int:pk>/revoke/", views_api.TokenRevoke.as_view(), name="revoke"),
    path("tokens/<int:pk>/usage/", views_api.TokenUsage.as_view(), name="usage"),
]
