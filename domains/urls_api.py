"""The management API for domains, members, roles, invitations and model access."""

urlpatterns: list = []
