"""WebSocket routes of every app, gathered for the ASGI router."""

from django.urls import path

from inference.jobs.consumers import TranscriptionJobsConsumer

websocket_urlpatterns: list = [
    path(
        "ws/domains/<uuid:domain_id>/transcriptions/",
        TranscriptionJobsConsumer.as_asgi(),
        name="ws_transcriptions",
    ),
]
