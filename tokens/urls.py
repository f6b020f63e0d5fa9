"""Profile → Personal Access Tokens pages."""

from django.urls import path

from tokens import views

app_name = "tokens"

urlpatterns = [
    path("", views.token_list, name="list"),
    path("new/", views.token_create, name="create"),
    path("<int:pk>/usage/", views.token_usage, name="usage"),
    path("<int:pk>/usage/export.csv", views.token_usage_export, name="usage_export"),
    path("<int:pk>/secret/", views.token_secret, name="secret"),
    path("<int:pk>/rotate/", views.token_rotate, name="rotate"),
    path("<int:pk>/revoke/", views.token_revoke, name="revoke"),
    path("<int:pk>/delete/", views.token_delete, name="delete"),
]
