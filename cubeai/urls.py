"""Top-level URLs: pages, probes, the admin and the APIs."""

from django.contrib import admin
from django.urls import include, path, re_path, register_converter
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cubeai import views
from cubeai.api import api, not_found
from cubeai.converters import IdConverter
from cubeai.metrics import metrics_view
from domains.forms import AdminSignInForm
from domains.views import signin_limited

# Before the apps' URLs are included: they take their row ids as `<id:...>`.
register_converter(IdConverter, "id")

# The admin's sign-in counts failed attempts per client address as /signin/ and the APIs do
# (set before `admin.site.urls` is read, which routes `login/` to `admin.site.login`).
admin.site.login_form = AdminSignInForm
admin.site.login = signin_limited(admin.site.login)

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard", permanent=False)),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    # Under /proxy/ every answer is OpenAI's: what the API does not route is its 404.
    re_path(r"^proxy/?$", not_found),
    path("proxy/", api.urls),
    # (?s): a path parameter may hold a decoded newline, which a bare `.` does not match.
    re_path(r"^proxy/(?P<rest>(?s:.*))$", not_found),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("inference.urls_api")),
    path("api/", include("domains.urls_api")),
    path("api/", include("tokens.urls_api")),
    path("api/", include("guardrails.urls_api")),
    path("api/", include("limits.urls_api")),
    # Anything else under /api/ (with its slash; APPEND_SLASH still redirects the rest):
    # a 404 in the management API's envelope, never an HTML page.
    re_path(r"^api/(?P<rest>(?s:.+))/$", views.api_not_found),
    path("profile/tokens/", include("tokens.urls")),
    path("", include("inference.urls")),
    path("", include("inference.jobs.urls")),
    path("", include("domains.urls")),
    path("", include("guardrails.urls")),
    path("", include("limits.urls")),
]
