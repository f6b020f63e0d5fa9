"""The transcription page of a domain, under /domains/<domain_id>/transcriptions/."""

from django.urls import path

from inference.jobs import views

PREFIX = "domains/<uuid:domain_id>/transcriptions/"

urlpatterns = [
    path(PREFIX, views.transcriptions, name="domain_transcriptions"),
    path(
        PREFIX + "<uuid:job_id>/result.<str:fmt>",
        views.transcription_result,
        name="domain_transcription_result",
    ),
    path(
        PREFIX + "<uuid:job_id>/cancel/",
        views.transcription_cancel,
        name="domain_transcription_cancel",
    ),
]
