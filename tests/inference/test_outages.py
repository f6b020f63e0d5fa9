"""PostgreSQL or Redis away (a restart, a failover): the API answers a clean 503 in OpenAI's
envelope with `Retry-After`, never a 500, and serves again when they are back."""

import pytest
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from domains import permissions
from inference.limits import RateLimiter
from tokens import services as token_services

CHAT = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}


def assert_retry_later(response):
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    error = response.json()["error"]
    assert error["code"] == "service_unavailable" and error["type"] == "server_error"
    assert "OperationalError" not in error["message"] and "Redis" not in error["message"]


@pytest.mark.django_db
def test_the_database_away_is_a_503_to_retry(client, alice, domain, pat, monkeypatch):
    token = pat(alice, scopes=[permissions.MODELS_READ])
    url, auth = f"/proxy/{domain.pk}/v1/models", {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    real = token_services.token_authenticate

    def away(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(token_services, "token_authenticate", away)
    assert_retry_later(client.get(url, **auth))
    monkeypatch.setattr(token_services, "token_authenticate", real)
    assert client.get(url, **auth).status_code == 200


@pytest.mark.django_db
def test_redis_away_is_a_503_to_retry(client, alice, domain, pat, monkeypatch):
    token = pat(alice, scopes=[permissions.CHAT])

    async def away(self, keys, window):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(RateLimiter, "_count", away)
    response = client.post(
        f"/proxy/{domain.pk}/v1/chat/completions",
        CHAT,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert_retry_later(response)
