from django.apps import AppConfig


class InferenceConfig(AppConfig):
    """The OpenAI-compatible API, model registry, backends, routing and usage."""

    name = "inference"

    def ready(self) -> None:
        from inference import signals

        signals.connect()
