from django.apps import AppConfig


class DomainsConfig(AppConfig):
    """Users, domains (tenants), memberships, roles and invitations."""

    name = "domains"
