"""Token operations in the management API (session-authenticated only)."""

from django.urls import path

from tokens import views_api

app_name = "tokens_api"

urlpatterns = [
    path("tokens/", views_api.TokenListCreate.as_view(), name="list"),
    path("tokens/<id:pk>/", views_api.TokenDetail.as_view(), name="detail"),
    path("tokens/<id:pk>/rotate/", views_api.TokenRotate.as_view(), name="rotate"),
    path("tokens/<id:pk>/revoke/", views_api.TokenRevoke.as_view(), name="revoke"),
    path("tokens/<id:pk>/usage/", views_api.TokenUsage.as_view(), name="usage"),
]
