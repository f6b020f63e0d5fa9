"""WebSocket routes of every app, gathered for the ASGI router."""

from django.urls import path

from inference.consumers import ChatConsumer
from inference.jobs.consumers import TranscriptionJobsConsumer

websocket_urlpatterns: list = [
    path("ws/domains/<uuid:domain_id>/chat/", ChatConsumer.as_asgi(), name="ws_chat"),
    path(
        "ws/domains/<uuid:domain_id>/transcriptions/",
        TranscriptionJobsConsumer.as_asgi(),
        name="ws_transcriptions",
    ),
]
