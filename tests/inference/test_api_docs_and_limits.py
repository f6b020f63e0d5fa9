"""The API's OpenAPI document, and the rate limiter."""

import pytest
from django.core.cache import cache

from inference.errors import RateLimited
from inference.limits import RateLimiter


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
def limiter(settings):
    settings.CUBEAI_RATE_LIMIT_TOKEN_RPM = 3
    settings.CUBEAI_RATE_LIMIT_DOMAIN_RPM = 5
    cache.clear()
    return RateLimiter()


async def test_it_limits_requests_per_token_with_openai_headers(limiter):
    for remaining in (2, 1, 0):
        headers = await limiter.check(caller_key="t:101", domain_id="d-101")
        assert headers["x-ratelimit-remaining-requests"] == str(remaining)
    with pytest.raises(RateLimited) as caught:
        await limiter.check(caller_key="t:101", domain_id="d-101")
    assert caught.value.status == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert 0 < int(caught.value.headers["Retry-After"]) <= 60


async def test_it_limits_requests_per_domain_across_tokens(limiter):
    for token_id in range(200, 205):
        await limiter.check(caller_key=f"t:{token_id}", domain_id="d-200")
    with pytest.raises(RateLimited) as caught:
        await limiter.check(caller_key="u:299", domain_id="d-200")
    assert "domain" in caught.value.message


async def test_a_browser_session_is_counted_per_user_apart_from_its_tokens(limiter):
    for _ in range(3):
        await limiter.check(caller_key="u:7", domain_id="d-300")
    with pytest.raises(RateLimited):
        await limiter.check(caller_key="u:7", domain_id="d-300")
    # The same user's token has a count of its own; the domain's is shared.
    await limiter.check(caller_key="t:7", domain_id="d-301")
