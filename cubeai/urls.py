"""Top-level URLs: pages, probes, the admin and the APIs."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cubeai import views
from cubeai.api import api

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard", permanent=False)),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("proxy/", api.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("inference.urls_api")),
    path("api/", include("domains.urls_api")),
    path("api/", include("tokens.urls_api")),
    path("api/", include("guardrails.urls_api")),
    path("profile/tokens/", include("tokens.urls")),
    path("", include("inference.urls")),
    path("", include("inference.jobs.urls")),
    path("", include("domains.urls")),
    path("", include("guardrails.urls")),
]
