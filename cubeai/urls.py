"""Top-level URLs: pages, probes, the admin and the APIs."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from cubeai import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard", permanent=False)),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("", include("domains.urls")),
]
