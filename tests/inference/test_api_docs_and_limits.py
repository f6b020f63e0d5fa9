"""The API's OpenAPI document, and the rate limiter."""

import uuid

import pytest

from inference.errors import RateLimited
from limits import gate


def test_the_openapi_document_describes_every_endpoint(client):
    schema = client.get("/proxy/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/proxy/{domain_id}/v1/chat/completions",
        "/proxy/{domain_id}/v1/completions",
        "/proxy/{domain_id}/v1/embeddings",
        "/proxy/{domain_id}/v1/audio/transcriptions",
        "/proxy/{domain_id}/v1/audio/translations",
        "/proxy/{domain_id}/v1/models",
    ):
        assert path in paths, path
    assert "/proxy/{domain_id}/v1/models/{model}" in paths
    chat = paths["/proxy/{domain_id}/v1/chat/completions"]["post"]
    assert chat["parameters"][0]["name"] == "domain_id"
    assert "messages" in schema["components"]["schemas"]["ChatCompletionCreateParams"]["properties"]
    assert schema["components"]["securitySchemes"]


def test_the_docs_page_loads_no_cdn_assets(client):
    page = client.get("/proxy/docs").content.decode()
    assert "swagger" in page.lower()
    assert "cdn." not in page and "unpkg" not in page


@pytest.fixture
def limited(settings, tmp_path):
    settings.CUBEAI_RATE_LIMIT_TOKEN_RPM = 3
    settings.CUBEAI_RATE_LIMIT_DOMAIN_RPM = 5
    settings.CUBEAI_LIMITS_SQLITE_PATH = str(tmp_path / "limits.sqlite3")
    gate._stores.clear()
    gate._cache.clear()
    yield
    gate._stores.clear()
    gate._cache.clear()


def admit(token_id: int, domain_id: str):
    return gate.admit(domain_id=domain_id, token_id=token_id, cost=1, stream=False)


@pytest.mark.django_db
async def test_it_limits_requests_per_token_with_openai_headers(limited):
    domain_id = str(uuid.uuid4())
    for remaining in (2, 1, 0):
        ticket = await admit(101, domain_id)
        assert ticket.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert ticket.headers["x-ratelimit-limit-requests"] == "3"
    with pytest.raises(RateLimited) as caught:
        await admit(101, domain_id)
    assert caught.value.status == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert 0 < int(caught.value.headers["Retry-After"]) <= 60


@pytest.mark.django_db
async def test_it_limits_requests_per_domain_across_tokens(limited):
    domain_id = str(uuid.uuid4())
    for token_id in range(200, 205):
        await admit(token_id, domain_id)
    with pytest.raises(RateLimited) as caught:
        await admit(299, domain_id)
    assert "domain" in caught.value.message


@pytest.mark.django_db
async def test_a_browser_session_is_counted_per_user_apart_from_its_tokens(limited):
    domain_id = str(uuid.uuid4())

    def session(user_id: int):
        return gate.admit(domain_id=domain_id, token_id=None, user_id=user_id, cost=1, stream=False)

    for _ in range(3):
        await session(7)
    with pytest.raises(RateLimited):
        await session(7)
    # Another user's session, and the same user's token, have counts of their own.
    await session(8)
    await admit(7, domain_id)
