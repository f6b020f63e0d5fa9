"""A fake agent for the attestation tests: a fault injector and a TEE stand-in.

It is a fake on purpose, for what cannot run here or must misbehave on demand:

- faults the real agent never commits: a replayed reply, altered report data, garbage
  JSON, a reply that never comes, an HTTP error, an oversized body;
- hardware evidence, which no machine here can produce: real SEV-SNP evidence from
  `tests/attestation/data` (genuine but bound to someone else's nonce), or a *simulated*
  TEE whose reports are signed with a test key and checked by `SimulatedSnpVerifier`,
  so that a test can drive a confidential backend through verified and failed states.

It serves `POST /attestation` and, for routing tests, a minimal
`POST /v1/chat/completions`, over http or https (`tls=(cert_path, key_path)`), from a
thread of the test process; `behaviour` can be switched while it runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from inference.attestation import Evidence, Failure, FailureCode, TeeType, VerificationResult
from inference.attestation.base import Verifier
from inference.attestation.policy import SnpPolicy

SIMULATION_KEY = b"simulated-tee-signing-key-for-tests-only"


def simulated_report(measurement: str, report_data: bytes) -> bytes:
    body = json.dumps({"measurement": measurement, "report_data": report_data.hex()}).encode()
    return body + b"." + hmac.new(SIMULATION_KEY, body, hashlib.sha256).hexdigest().encode()


class SimulatedSnpVerifier(Verifier):
    """Stands in for AMD's signature chain, which needs real hardware evidence we cannot
    bind to a fresh nonce: checks the test key's MAC, then the policy's measurements."""

    tee_type = TeeType.SEV_SNP
    policy_model = SnpPolicy

    def _verify(self, evidence: Evidence, policy: SnpPolicy, now: datetime) -> VerificationResult:
        body, _, mac = evidence.report.rpartition(b".")
        expected = hmac.new(SIMULATION_KEY, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(mac, expected):
            return VerificationResult.failed(
                self.tee_type, FailureCode.SIGNATURE_INVALID, "simulated report signature"
            )
        claims = json.loads(body)
        failures = []
        if claims["measurement"] not in policy.measurements:
            failures.append(Failure(FailureCode.MEASUREMENT_MISMATCH, "measurement not allowed"))
        return VerificationResult.from_checks(self.tee_type, failures, claims)


def spki_of(cert_path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class FakeAgent:
    """`behaviour` is one of: "simulated", "snp", "replay", "alter", "garbage", "slow",
    "error", "huge". `upstream` is a real agent's URL for "alter"; `captured` a reply
    for "replay"; `snp_evidence` an `Evidence` for "snp"."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None) -> None:
        self.behaviour = "simulated"
        self.measurement = "ab" * 48
        self.upstream = ""
        self.captured: dict[str, Any] | None = None
        self.snp_evidence: Evidence | None = None
        self.tls_key = spki_of(tls[0]) if tls else None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/attestation":
                    status, payload = fake.attestation(json.loads(body))
                else:
                    status, payload = 200, fake.chat(json.loads(body))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on purpose (timeouts, size limits)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, tls))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _reply(self, nonce: bytes, evidence: bytes | None, auxblob: bytes | None, provider: str):
        report_data = hashlib.sha512(nonce + (self.tls_key or b"")).digest()
        return {
            "provider": provider,
            "confidential": provider != "none",
            "nonce": nonce.hex(),
            "report_data": report_data.hex(),
            "tls_public_key": base64.b64encode(self.tls_key).decode() if self.tls_key else None,
            "evidence": base64.b64encode(evidence).decode() if evidence else None,
            "auxblob": base64.b64encode(auxblob).decode() if auxblob else None,
            "generated_at": datetime.now(UTC).isoformat(),
        }

    def attestation(self, body: dict) -> tuple[int, bytes]:
        nonce = bytes.fromhex(body["nonce"])
        behaviour = self.behaviour
        if behaviour == "simulated":
            report_data = hashlib.sha512(nonce + (self.tls_key or b"")).digest()
            report = simulated_report(self.measurement, report_data)
            return 200, json.dumps(self._reply(nonce, report, None, "sev-snp")).encode()
        if behaviour == "snp":
            evidence = self.snp_evidence
            reply = self._reply(nonce, evidence.report, evidence.auxblob, "sev-snp")
            return 200, json.dumps(reply).encode()
        if behaviour == "replay":
            return 200, json.dumps(self.captured).encode()
        if behaviour == "alter":
            request = urllib.request.Request(
                f"{self.upstream}/attestation",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                reply = json.load(response)
            data = bytearray.fromhex(reply["report_data"])
            data[0] ^= 1
            reply["report_data"] = data.hex()
            return 200, json.dumps(reply).encode()
        if behaviour == "garbage":
            return 200, b'{"provider": "none", "confidential": fal'
        if behaviour == "slow":
            time.sleep(5)
            return 200, b"{}"
        if behaviour == "error":
            return 503, b'{"error": {"message": "TEE unavailable"}}'
        if behaviour == "huge":
            return 200, b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
        raise ValueError(behaviour)

    def chat(self, body: dict) -> bytes:
        return json.dumps(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "attested hello"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }
        ).encode()
