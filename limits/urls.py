from django.urls import path

from limits import views

urlpatterns = [
    path("domains/<uuid:domain_id>/limits/", views.domain_limits, name="domain_limits"),
]
