"""Slow and oversized requests on every path, against the real server (findings: a request
declaring `Content-Length: 100` and sending 9 bytes held its connection for 600 s; headers
had no timeout at all; paths outside /proxy/ had no body-size limit).

uvicorn runs with `cubeai.server:HttpToolsProtocol` (a header-read timeout) and the
application's `BodyLimit` (body-read timeouts and the size limit, every path). Raw sockets,
so that the test controls the wire byte by byte.
"""

import json
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import _stop
from tests.inference.conftest import start_gateway

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_JSON = 64 * 1024


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        process, url = start_gateway(
            tmp_path_factory.mktemp("slow-gateway"),
            CUBEAI_HEADER_READ_TIMEOUT=str(HEADER_TIMEOUT),
            CUBEAI_BODY_READ_TIMEOUT=str(BODY_TIMEOUT),
            CUBEAI_MAX_JSON_BYTES=str(MAX_JSON),
        )
    yield urlsplit(url)
    _stop(process)


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.hostname, server.port), timeout=15)
    return sock


def read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything until the server closes, and how long that took."""
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    "path", ["/proxy/00000000-0000-0000-0000-000000000000/v1/chat/completions", "/api/domains/"]
)
def test_a_body_shorter_than_declared_gets_a_408_and_the_connection_closes(server, path):
    with connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            'Content-Length: 100\r\n\r\n{"model":'.encode()
        )
        answer, took = read_all(sock)
    assert took < BODY_TIMEOUT + 3
    status, headers, body = split(answer)
    assert status == 408 and headers["connection"] == "close"
    if path.startswith("/proxy/"):
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert headers["x-request-id"].startswith("req_")
    else:
        assert json.loads(body) == {"detail": "The request body did not arrive in time."}


def test_headers_that_never_end_are_cut_off(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer, took = read_all(sock)
    assert answer == b"" and took < HEADER_TIMEOUT + 3


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        answer, took = read_all(sock)
    assert answer == b"" and took < HEADER_TIMEOUT + 3


def test_a_kept_alive_connection_still_serves_its_next_request(server):
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status": "ok"}'):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(HEADER_TIMEOUT / 2)
        # Then a slow next request: its headers get the timeout too.
        sock.sendall(b"GET /heal")
        rest, took = read_all(sock)
    assert rest == b"" and took < HEADER_TIMEOUT + 3


@pytest.mark.parametrize("path", ["/api/domains/", "/accounts/signin/", "/admin/login/"])
def test_pages_and_the_management_api_have_a_body_size_limit(server, path):
    with connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_JSON + 1}\r\n\r\n".encode()
        )
        answer, _ = read_all(sock)
    status, headers, body = split(answer)
    assert status == 413 and headers["connection"] == "close"
    assert "exceeds the limit" in json.loads(body)["detail"]
