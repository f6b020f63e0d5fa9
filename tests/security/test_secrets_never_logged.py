"""Secrets never in logs: the session-wide check of `tests/leaks.py` notes what must not be
logged and finds it wherever it was logged. (The check itself runs at the end of every test
session, over every log record and every server log file.)"""

import json
import logging

import httpx

from domains import permissions
from tests import leaks
from tests.agent.credentials import AGENT_CREDENTIAL


def test_it_notes_tokens_credentials_prompts_and_completions(client, alice, domain, pat):
    token = pat(alice, scopes=[permissions.CHAT])
    prompt = "my account number is secret-prompt-4711, please summarise it"
    client.post(
        f"/proxy/{domain.pk}/v1/chat/completions",
        {"model": "nope", "messages": [{"role": "user", "content": prompt}]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    noted = leaks.SECRETS.values
    assert noted[token] == "a personal access token"
    assert noted[token[leaks.TOKEN_SECRET_OFFSET :][:32]] == "a personal access token's secret"
    assert noted[AGENT_CREDENTIAL] == "the test agents' credential"
    assert noted[prompt] == "a prompt a test sent"
    assert any(isinstance(h, leaks.Capture) for h in logging.getLogger().handlers)


def test_it_notes_a_streamed_completion_as_the_test_reads_it():
    completion = "The streamed answer names secret-completion-0815 twice."
    events = [{"choices": [{"delta": {"content": completion}}]}]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body
        )
    )
    url = "http://agent.test/v1/chat/completions"
    with (
        httpx.Client(transport=transport) as client,
        client.stream("POST", url, json={}) as response,
    ):
        assert b"[DONE]" in b"".join(response.iter_bytes())
    assert leaks.SECRETS.values[completion] == "a completion a test received"


def test_it_finds_a_secret_in_a_log_record_or_a_server_log_and_names_no_value(tmp_path):
    secrets = leaks.Secrets()
    token = "cube_pat_AbCdEfGhIj_" + "s" * 38
    secrets.add_token(token)
    secrets.add_texts(
        '{"messages": [{"content": "a prompt that must not leak anywhere"}]}', "a prompt"
    )
    capture = leaks.Capture()
    logger = logging.getLogger("tests.leaks.selftest")
    logger.addHandler(capture)
    logger.propagate = False
    try:
        logger.warning("refused %s", token)
    finally:
        logger.removeHandler(capture)
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "web.log").write_text(
        "ok\nrequest a prompt that must not leak anywhere\n"
    )
    (tmp_path / "fake.log").write_text("echo: a prompt that must not leak anywhere\n")
    sources = {"records": "\n".join(capture.lines), **leaks._process_logs(tmp_path)}
    found = leaks.find_leaks(secrets, sources)
    assert found == [
        "a personal access token (58 characters) in records, line 1",
        "a personal access token's secret (32 characters) in records, line 1",
        "a prompt (36 characters) in gateway/web.log, line 2",
    ]
    assert not any(token in line or "must not leak" in line for line in found)


def test_short_texts_are_not_noted_so_common_words_do_not_match():
    secrets = leaks.Secrets()
    secrets.add_texts({"messages": [{"role": "user", "content": "hi"}], "input": "hello"}, "x")
    assert secrets.values == {}
