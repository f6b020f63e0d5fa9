"""An unexpected failure is answered in OpenAI's envelope and logged without any content."""

import logging

import pytest

from inference import pipeline


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_logs_no_prompt_text(client, alice, domain, pat, monkeypatch, caplog):
    secret_prompt = "my diagnosis is confidential-4711"

    async def explode(call, model):
        raise ValueError(f"cannot route {secret_prompt}")

    monkeypatch.setattr(pipeline, "_route", explode)
    token = pat(alice)
    with caplog.at_level(logging.DEBUG):
        response = client.post(
            f"/proxy/{domain.pk}/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": secret_prompt}]},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "ValueError" in caplog.text
    assert secret_prompt not in caplog.text
    assert token not in caplog.text
