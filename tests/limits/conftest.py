from tests.inference.conftest import fake_upstream_url  # noqa: F401
