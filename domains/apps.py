from django.apps import AppConfig


class DomainsConfig(AppConfig):
    """Users, domains (tenants), memberships, roles and invitations."""

    name = "domains"

    def ready(self) -> None:
        # Registers the OpenAPI extension for personal access tokens.
        from domains import schema  # noqa: F401
