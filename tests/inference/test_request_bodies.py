"""Request bodies end to end on the real gateway: of unknown length (`Transfer-Encoding:
chunked`, as the official Node SDK sends file uploads), over the limits, cut short, and
malformed multipart. Raw sockets where the test must control the wire byte by byte."""

import contextlib
import json
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from inference.limits import LINGER_SECONDS
from inference.models import UsageEvent
from tests.conftest import _stop
from tests.inference.conftest import (
    GATEWAY_MAX_AUDIO_BYTES,
    committed,
    start_gateway,
    usage_row,
)
from tests.inference.test_openai_api import word_error_rate

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

BOUNDARY = "cubeai-test-boundary"


def multipart(fields: dict[str, str], audio: bytes, boundary: str = BOUNDARY) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="speech.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
        + audio
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def pieces(body: bytes, size: int = 16 * 1024):
    """The body as a generator: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def post_chunked(stack, path: str, body: bytes, content_type: str, request_id: str = ""):
    headers = {"Authorization": f"Bearer {stack.alice_token}", "Content-Type": content_type}
    if request_id:
        headers["x-request-id"] = request_id
    response = httpx.post(
        f"{stack.base_url(stack.alpha)}{path}", content=pieces(body), headers=headers, timeout=120
    )
    # What went over the wire had no length: the case under test.
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    return response


def assert_never_metered(stack, request_id: str) -> None:
    """No usage event for `request_id`: the pipeline, which meters every call it runs, never
    ran. A request sent after it is metered first, so the gateway has flushed by then."""
    after_id = f"req-after-{uuid.uuid4().hex[:8]}"
    response = stack.client(stack.alice_token).chat.completions.with_raw_response.create(
        model="echo",
        messages=[{"role": "user", "content": "still there?"}],
        extra_headers={"x-request-id": after_id},
    )
    assert response.http_response.status_code == 200
    assert usage_row(after_id)["status"] == 200
    assert not committed(lambda: UsageEvent.objects.filter(request_id=request_id).exists())


class RawRequest:
    """One HTTP/1.1 request written by hand on a socket, its chunks sent as the test says."""

    def __init__(self, stack, path: str, content_type: str, request_id: str) -> None:
        url = urlsplit(f"{stack.base_url(stack.alpha)}{path}")
        self.sock = socket.create_connection((url.hostname, url.port), timeout=30)
        head = (
            f"POST {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\n"
            f"Authorization: Bearer {stack.alice_token}\r\nContent-Type: {content_type}\r\n"
            f"x-request-id: {request_id}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.sock.sendall(head.encode())

    def send_chunk(self, data: bytes) -> None:
        self.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def read_response(self) -> tuple[int, dict[str, str], bytes, float]:
        """Status, headers, body, and how long after it the server closed the connection."""
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(body) < int(headers["content-length"]):
            body += self.sock.recv(65536)
        answered = time.monotonic()
        # The server closes the connection: an orderly end, or a reset if data was unread.
        with contextlib.suppress(ConnectionResetError):
            assert self.sock.recv(1) == b"", "more than the response came"
        return int(lines[0].split()[1]), headers, body, time.monotonic() - answered


def test_a_chunked_multipart_upload_is_transcribed(stack, speech):
    audio = speech("The quick brown fox jumps over the lazy dog.").read_bytes()
    body = multipart({"model": "whisper-tiny.en", "response_format": "json"}, audio)
    response = post_chunked(
        stack, "/audio/transcriptions", body, f"multipart/form-data; boundary={BOUNDARY}"
    )
    assert response.status_code == 200, response.text
    text = response.json()["text"]
    assert word_error_rate("the quick brown fox jumps over the lazy dog", text) < 0.4, text


def test_a_chunked_json_chat_is_answered(stack):
    request_id = f"req-chunked-json-{uuid.uuid4().hex[:8]}"
    payload = {"model": "echo", "messages": [{"role": "user", "content": "Hello, chunked world"}]}
    response = post_chunked(
        stack,
        "/chat/completions",
        json.dumps(payload).encode(),
        "application/json",
        request_id=request_id,
    )
    assert response.status_code == 200, response.text
    # The fake upstream echoes the messages it received: the whole body came through.
    assert "Hello, chunked world" in response.json()["choices"][0]["message"]["content"]
    row = usage_row(request_id)
    assert row["status"] == 200 and row["endpoint"] == "chat.completions"


@pytest.mark.parametrize(
    ("path", "content_type", "limit_mb"),
    [
        (
            "/audio/transcriptions",
            f"multipart/form-data; boundary={BOUNDARY}",
            GATEWAY_MAX_AUDIO_BYTES // 2**20,
        ),
        ("/chat/completions", "application/json", 4),
    ],
    ids=["audio", "json"],
)
def test_an_oversized_chunked_body_is_refused_while_it_streams(stack, path, content_type, limit_mb):
    """A client that never finishes gets its 413 at once, and the server closes the connection
    LINGER_SECONDS later (reading and dropping what still comes meanwhile, so that the client
    can read the answer), rather than read, or wait for, the rest."""
    request_id = f"req-oversized-{uuid.uuid4().hex[:8]}"
    raw = RawRequest(stack, path, content_type, request_id)
    stopped = threading.Event()
    stopped_at = 0.0

    def send_forever() -> None:
        nonlocal stopped_at
        chunk = b"x" * 65536
        try:
            while True:
                raw.send_chunk(chunk)
        except OSError:
            stopped_at = time.monotonic()
            stopped.set()

    started = time.monotonic()
    threading.Thread(target=send_forever, daemon=True).start()
    status, headers, body, closed_after = raw.read_response()
    answered_at = time.monotonic() - closed_after
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "error": {
            "message": f"The request body exceeds the limit of {limit_mb} MB.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    assert answered_at - started < 5, "the 413 came late"
    assert closed_after < LINGER_SECONDS + 3, "the server kept the connection open"
    assert stopped.wait(timeout=5), "the client could keep sending"
    # Until then the server read on (and dropped it): no reset while the answer was read.
    assert stopped_at - answered_at > LINGER_SECONDS / 2, "the connection was reset at once"
    raw.sock.close()
    # Refused before any view ran: nothing was metered, let alone forwarded.
    assert_never_metered(stack, request_id)


def test_a_chunked_upload_cut_before_its_closing_boundary_is_a_400_with_nothing_forwarded(
    stack, speech
):
    audio = speech("The quick brown fox jumps over the lazy dog.").read_bytes()
    whole = multipart({"model": "whisper-tiny.en"}, audio)
    cut = whole[: len(whole) // 2]
    request_id = f"req-cut-{uuid.uuid4().hex[:8]}"
    response = post_chunked(
        stack,
        "/audio/transcriptions",
        cut,
        f"multipart/form-data; boundary={BOUNDARY}",
        request_id=request_id,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_multipart"
    assert "closing boundary" in error["message"]
    # Refused before the pipeline: nothing routed, nothing sent upstream.
    assert_never_metered(stack, request_id)


def test_a_client_that_drops_a_chunked_upload_midway_leaves_no_trace(stack, speech):
    audio = speech("The quick brown fox jumps over the lazy dog.").read_bytes()
    whole = multipart({"model": "whisper-tiny.en"}, audio)
    dropped_id = f"req-dropped-{uuid.uuid4().hex[:8]}"
    raw = RawRequest(
        stack, "/audio/transcriptions", f"multipart/form-data; boundary={BOUNDARY}", dropped_id
    )
    raw.send_chunk(whole[: len(whole) // 2])
    raw.sock.close()
    # The gateway serves the next request; the dropped one never reached the pipeline.
    assert_never_metered(stack, dropped_id)


@pytest.fixture(scope="module")
def forms_gateway(django_db_blocker, tmp_path_factory):
    """A gateway whose limit on a form's text fields (CUBEAI_MAX_JSON_BYTES) is below its
    audio limit, as in production (4 MB and 25 MB), at sizes a test sends quickly."""
    with django_db_blocker.unblock():
        process, url = start_gateway(
            tmp_path_factory.mktemp("forms-gateway"), CUBEAI_MAX_JSON_BYTES=str(256 * 1024)
        )
    yield url
    _stop(process)


def _form(fields: int = 0, text_bytes: int = 0, files: int = 0) -> bytes:
    body = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode()
        for i in range(fields)
    )
    body += b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file{i}"; filename="{i}.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\nRIFF\r\n".encode()
        for i in range(files)
    )
    if text_bytes:
        body += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode()
            + b"a" * text_bytes
            + b"\r\n"
        )
    return body + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("multipart/form-data", b"xx", "Invalid boundary"),
        ("multipart/form-data; boundary=", b"xx", "Invalid boundary"),
        (f"multipart/form-data; boundary={'b' * 300}", b"xx", "Invalid boundary"),
        (f"multipart/form-data; boundary={BOUNDARY}", _form(fields=1001), "more than 1000 fields"),
        (f"multipart/form-data; boundary={BOUNDARY}", _form(files=101), "more than 100 files"),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            _form(text_bytes=256 * 1024 + 1),
            "text fields exceed 0.25 MB",
        ),
        (f"multipart/form-data; boundary={BOUNDARY}", b"", "closing boundary"),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            _form(fields=2)[:-20],
            "closing boundary",
        ),
    ],
    ids=[
        "no-boundary",
        "empty-boundary",
        "long-boundary",
        "fields",
        "files",
        "text",
        "empty",
        "cut",
    ],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_malformed_multipart_body_is_a_400_in_openais_envelope(
    stack, forms_gateway, content_type, body, message, chunked
):
    request_id = f"req-malformed-{uuid.uuid4().hex[:8]}"
    headers = {
        "Authorization": f"Bearer {stack.alice_token}",
        "Content-Type": content_type,
        "x-request-id": request_id,
    }
    response = httpx.post(
        stack.base_url(stack.alpha).replace(stack.gateway, forms_gateway) + "/audio/transcriptions",
        content=pieces(body) if chunked else body,
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.headers["x-request-id"] == request_id
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_multipart"
    assert message in error["message"]
