"""A pytest plugin: nothing secret reaches any log of the test session.

While the suite runs it notes what must never be logged:

- every personal access token the tests issue or rotate (the whole token and its secret);
- every backend credential (the test agents' and any generated or stored by the platform);
- the prompts and completions the tests exchange with the OpenAI-compatible API (through
  httpx, which the `openai` package uses, or Django's test client): message contents,
  prompts, inputs and completion texts of 16 characters or more, so common words do not
  match by chance.

It keeps every log record emitted in the test process, and at the end reads the log files of
the processes the fixtures started (gateway, Celery worker, agents, servers: every `*.log`
under the session's temporary directory, except the fault-injecting fakes', which echo on
purpose). If any of them holds any of those values, the session ends with an error naming
what leaked and where — never the value itself.

Tokens issued inside a server process (a browser creating one) are not seen here; the
browser tests check their own pages.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

# The keys whose string values are prompt or completion text, in requests and responses.
TEXT_KEYS = frozenset({"content", "prompt", "input", "text"})
MIN_TEXT_LENGTH = 16
TOKEN_SECRET_OFFSET = len("cube_pat_") + 11  # after the prefix, the key id and "_"


class Secrets:
    """Values that must never be logged, each with a label that says what it is."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, value: Any, label: str, *, min_length: int = MIN_TEXT_LENGTH) -> None:
        if isinstance(value, str) and len(value.strip()) >= min_length:
            self.values.setdefault(value, label)

    def add_token(self, token: Any) -> None:
        if isinstance(token, str) and token.startswith("cube_pat_"):
            self.add(token, "a personal access token")
            self.add(token[TOKEN_SECRET_OFFSET:][:32], "a personal access token's secret")

    def add_texts(self, payload: Any, label: str) -> None:
        """Every prompt or completion text inside a JSON payload (or a stream of events)."""
        if isinstance(payload, bytes):
            payload = payload.decode(errors="replace")
        if isinstance(payload, str):
            for document in _json_documents(payload):
                self.add_texts(document, label)
            return
        if isinstance(payload, dict):
            for key, value in payload.items():
                if key in TEXT_KEYS and isinstance(value, str):
                    self.add(value, label)
                else:
                    self.add_texts(value, label)
        elif isinstance(payload, list):
            for item in payload:
                self.add_texts(item, label)


def _json_documents(text: str) -> Iterable[Any]:
    """A JSON body, or each `data:` event of an SSE stream."""
    try:
        yield json.loads(text)
        return
    except (ValueError, RecursionError):
        # Not JSON, or nested deeper than the parser goes (bodies the security suite sends
        # to be refused): no prompt text to note.
        pass
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            try:
                yield json.loads(line[len("data: ") :])
            except (ValueError, RecursionError):
                continue


def find_leaks(secrets: Secrets, sources: dict[str, str]) -> list[str]:
    """`what leaked in where` for every secret found in a source; values never repeated."""
    found = []
    for source, text in sources.items():
        for value, label in secrets.values.items():
            if value in text:
                line = text.count("\n", 0, text.index(value)) + 1
                found.append(f"{label} ({len(value)} characters) in {source}, line {line}")
    return found


class Capture(logging.Handler):
    """Keeps every record that reaches the root logger, as text."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg} {record.args}"
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.lines.append(f"{record.name} {record.levelname} {text}")


SECRETS = Secrets()


def _recording(original: Callable, note: Callable[[Any, tuple, dict], None]) -> Callable:
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        note(result, args, kwargs)
        return result

    wrapper.__wrapped__ = original
    return wrapper


def _async_recording(original: Callable, note: Callable[[Any, tuple, dict], None]) -> Callable:
    async def wrapper(*args, **kwargs):
        result = await original(*args, **kwargs)
        note(result, args, kwargs)
        return result

    wrapper.__wrapped__ = original
    return wrapper


def _is_api(url: str) -> bool:
    return "/v1/" in url


def _httpx_note(module) -> Callable[[Any, tuple, dict], None]:
    def note(response, args, kwargs) -> None:
        request = args[1] if len(args) > 1 else kwargs.get("request")
        if request is None or not _is_api(str(request.url)):
            return
        # A body the test streams (chunked uploads) was never held whole: not noted.
        if request.headers.get("content-type", "").startswith("application/json") and hasattr(
            request, "_content"
        ):
            SECRETS.add_texts(request.content, "a prompt a test sent")
        # A streamed body not read yet is noted as the test reads it (httpx has read a body
        # that was all there at once already).
        if kwargs.get("stream") and not hasattr(response, "_content"):
            response.stream = _tee(module, response.stream)
        elif response.headers.get("content-type", "").startswith(("application/json", "text/")):
            SECRETS.add_texts(response.content, "a completion a test received")

    return note


def _tee(module, stream):
    """The stream, noting the text of the response as the test reads it."""
    received = bytearray()

    def done() -> None:
        SECRETS.add_texts(bytes(received), "a completion a test received")

    if isinstance(stream, module.AsyncByteStream):

        class AsyncTee(module.AsyncByteStream):
            async def __aiter__(self):
                async for chunk in stream:
                    received.extend(chunk)
                    yield chunk

            async def aclose(self) -> None:
                done()
                await stream.aclose()

        return AsyncTee()

    class Tee(module.SyncByteStream):
        def __iter__(self):
            for chunk in stream:
                received.extend(chunk)
                yield chunk

        def close(self) -> None:
            done()
            stream.close()

    return Tee()


def _note_django(response, args, kwargs) -> None:
    path = args[2] if len(args) > 2 else kwargs.get("path", "")
    if not _is_api(str(path)) or not hasattr(response, "status_code"):
        return
    data = args[3] if len(args) > 3 else kwargs.get("data", "")
    SECRETS.add_texts(data, "a prompt a test sent")
    streaming = getattr(response, "streaming", False)
    if not streaming and response.get("Content-Type", "").startswith("application/json"):
        SECRETS.add_texts(response.content, "a completion a test received")


def _note_token(result, args, kwargs) -> None:
    SECRETS.add_token(result[1] if isinstance(result, tuple) else result)


def _note_credential(result, args, kwargs) -> None:
    SECRETS.add(result, "a backend credential", min_length=1)


def _note_set_credential(result, args, kwargs) -> None:
    SECRETS.add(kwargs.get("credential"), "a backend credential", min_length=1)


def _process_logs(base: Path) -> dict[str, str]:
    return {
        str(path.relative_to(base)): path.read_text(errors="replace")
        for path in sorted(base.rglob("*.log"))
        if not path.name.startswith("fake")
    }


@pytest.fixture(scope="session", autouse=True)
def _no_secrets_in_logs(tmp_path_factory):
    import django.test.client
    import httpx
    import httpx2

    from inference import credentials
    from tests.agent.credentials import AGENT_CREDENTIAL
    from tokens import services as token_services

    SECRETS.add(AGENT_CREDENTIAL, "the test agents' credential")
    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    with pytest.MonkeyPatch.context() as patch:
        for module in (httpx, httpx2):
            note = _httpx_note(module)
            patch.setattr(module.Client, "send", _recording(module.Client.send, note))
            patch.setattr(
                module.AsyncClient, "send", _async_recording(module.AsyncClient.send, note)
            )
        factory = django.test.client.RequestFactory
        patch.setattr(factory, "generic", _recording(factory.generic, _note_django))
        for name in ("token_issue", "token_rotate"):
            patch.setattr(
                token_services, name, _recording(getattr(token_services, name), _note_token)
            )
        patch.setattr(
            credentials,
            "credential_generate",
            _recording(credentials.credential_generate, _note_credential),
        )
        patch.setattr(
            credentials,
            "backend_credential_set",
            _recording(credentials.backend_credential_set, _note_set_credential),
        )
        yield
    root.removeHandler(capture)
    sources = {"the test process's log records": "\n".join(capture.lines)}
    sources.update(_process_logs(tmp_path_factory.getbasetemp()))
    leaks = find_leaks(SECRETS, sources)
    assert not leaks, "secrets in the logs:\n" + "\n".join(leaks)
