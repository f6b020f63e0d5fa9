from django.apps import AppConfig


class TokensConfig(AppConfig):
    """Personal access tokens: keys, hashing, Bearer auth and the profile pages."""

    name = "tokens"
