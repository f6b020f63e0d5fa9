"""Token tests create many users: hash their passwords cheaply, except where a real server
process (with the default hashers) has to check a password."""

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hasher(request, settings):
    if request.node.get_closest_marker("browser") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
