"""PostgreSQL or Redis away (a restart, a failover): the API answers a clean 503 in OpenAI's
envelope with `Retry-After`, never a 500, and serves again when they are back."""

from types import SimpleNamespace

import pytest
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from domains import permissions
from tokens import services as token_services
from tokens import throttle

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
def test_the_database_away_is_a_503_to_retry_on_the_management_api(
    client, alice, domain, pat, monkeypatch
):
    token = pat(alice)
    url, auth = f"/api/domains/{domain.pk}/", {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    real = token_services.token_authenticate

    def away(*args, **kwargs):
        raise OperationalError("could not connect to server at 10.0.0.5")

    monkeypatch.setattr(token_services, "token_authenticate", away)
    response = client.get(url, **auth)
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response.json() == {
        "detail": "The service is briefly unavailable; please retry.",
        "code": "service_unavailable",
    }
    monkeypatch.setattr(token_services, "token_authenticate", real)
    assert client.get(url, **auth).json()["id"] == str(domain.pk)


@pytest.mark.django_db
def test_the_cache_away_falls_back_to_the_database(client, alice, domain, pat, settings):
    # Nothing listens on port 1: every cache call is refused at once.
    settings.CACHES = {
        "default": {
            "BACKEND": "cubeai.cache.DegradingRedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    token = pat(alice, scopes=[permissions.MODELS_READ])
    url = f"/proxy/{domain.pk}/v1/models"
    served = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert served.status_code == 200 and served.json()["object"] == "list"
    # The failed-authentication counter is not there either: a wrong token is still a 401.
    refused = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token[:-4]}AAAA")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.django_db
def test_redis_away_where_nothing_degrades_is_a_503_to_retry(
    client, alice, domain, pat, monkeypatch
):
    token = pat(alice, scopes=[permissions.CHAT])

    # A Redis error that reaches the API (here from the failed-authentication counter,
    # made to raise) is a clean 503, never a 500.
    def away(*args, **kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(throttle, "cache", SimpleNamespace(get=away))
    response = client.post(
        f"/proxy/{domain.pk}/v1/chat/completions",
        CHAT,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert_retry_later(response)


@pytest.mark.django_db
def test_usage_written_during_a_database_outage_is_kept_and_written_after(
    settings, domain, monkeypatch
):

    from inference import metering
    from inference.models import UsageEvent

    settings.CUBEAI_USAGE_FLUSH_SECONDS = 0.05
    metering.drain()
    real = metering.insert_rows

    def away(*args, **kwargs):
        raise OperationalError("the database system is shutting down")

    def event(request_id: str) -> dict:
        return {"domain_id": domain.pk, "request_id": request_id, "endpoint": "chat", "status": 200}

    async def outage_then_back():
        metering.record(**event("during-1"))
        metering.record(**event("during-2"))
        monkeypatch.setattr(metering, "insert_rows", away)
        await metering.flush()  # fails: kept
        assert [e["request_id"] for e in metering._buffer] == ["during-1", "during-2"]
        metering.record(**event("after"))
        monkeypatch.setattr(metering, "insert_rows", real)
        await metering.flush()

    from asgiref.sync import async_to_sync

    async_to_sync(outage_then_back)()
    assert sorted(UsageEvent.objects.values_list("request_id", flat=True)) == [
        "after",
        "during-1",
        "during-2",
    ]
    assert metering._buffer == []


@pytest.mark.django_db
def test_a_batch_that_would_fail_again_is_not_kept(settings, domain, monkeypatch):
    from django.db import IntegrityError

    from inference import metering

    metering.drain()

    def bad(*args, **kwargs):
        raise IntegrityError("FOREIGN KEY constraint failed")  # say, its domain deleted

    async def flush_bad_then_good():
        metering.record(domain_id=domain.pk, request_id="bad", endpoint="chat", status=200)
        monkeypatch.setattr(metering, "insert_rows", bad)
        await metering.flush()
        assert metering._buffer == []  # dropped (logged), so later batches are not poisoned

    from asgiref.sync import async_to_sync

    async_to_sync(flush_bad_then_good)()
