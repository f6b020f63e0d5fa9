"""Profile → Personal Access Tokens pages."""

from django.urls import path

from tokens import views

app_name = "tokens"

urlpatterns = [
    path("", views.token_list, name="list"),
    path("new/", views.token_create, name="create"),
    path("<id:pk>/usage/", views.token_usage, name="usage"),
    path("<id:pk>/usage/export.csv", views.token_usage_export, name="usage_export"),
    path("<id:pk>/secret/", views.token_secret, name="secret"),
    path("<id:pk>/rotate/", views.token_rotate, name="rotate"),
    path("<id:pk>/revoke/", views.token_revoke, name="revoke"),
    path("<id:pk>/delete/", views.token_delete, name="delete"),
]
