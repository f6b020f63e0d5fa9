"""WebSocket routes of every app, gathered for the ASGI router."""

from django.urls import path

from inference.consumers import ChatConsumer

websocket_urlpatterns: list = [
    path("ws/domains/<uuid:domain_id>/chat/", ChatConsumer.as_asgi(), name="ws_chat"),
]
