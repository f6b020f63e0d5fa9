"""Who may call the agent: the platform's credential for this backend, and how it arrives.

Every request outside ``OPEN_PATHS`` (metrics included) must carry ``Authorization: Bearer <credential>``, where
the credential is one the platform holds for this backend. The agent keeps only SHA-256
digests of the credentials it accepts, each with a version and, for one being replaced, the
time it stops being accepted (the grace period of a rotation). They come from two places:

- the credentials file (``CUBEAI_AGENT_CREDENTIALS_FILE``), read at start and again whenever
  it changes on disk; ``make run`` writes the development agent's there;
- provisioning by the platform (``POST /credentials``, when ``CUBEAI_AGENT_PLATFORM_KEY``
  names the platform's Ed25519 public key), right after the platform verified this agent's
  attestation. The new state is written back to the file, if there is one, so a restart
  keeps it.

A provisioning message is accepted only if it is signed by the platform's key over
``provisioning_message(...)``: the nonce of an attestation challenge this agent answered in
the last ``NONCE_TTL_SECONDS`` (once only), the SHA-256 of this agent's own TLS key, the
credential's version and digest and the grace period of the one it replaces. Versions only
go up. See ``agent/README.md`` for why this is sound.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

# Reachable without a credential: a bare liveness probe (it says nothing but "ok"), the
# attestation challenge and provisioning, which carry proofs of their own. Metrics name the
# models served and count their traffic: the platform's credential reads them.
OPEN_PATHS = frozenset({"/health", "/attestation", "/credentials"})
# A rotation's old credential stays valid at most this long.
MAX_GRACE_SECONDS = 24 * 3600
# Provisioning must follow the attestation whose nonce it names within this time.
NONCE_TTL_SECONDS = 120
MAX_REMEMBERED_NONCES = 4096
# How often the credentials file is checked for changes made by someone else.
RELOAD_INTERVAL_SECONDS = 1.0
MESSAGE_LABEL = "cubeai-agent-credential/1"


class CredentialError(ValueError):
    """A credentials file or public key that cannot be used; the message says why."""


class ProvisioningRefused(Exception):
    """A provisioning request the agent does not act on: HTTP status and a reason."""

    def __init__(self, status: int, message: str, *, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def digest(credential: str) -> bytes:
    """The SHA-256 of a credential, which is all the agent keeps of it."""
    return hashlib.sha256(credential.encode()).digest()


def provisioning_message(
    *,
    nonce: bytes,
    tls_key_sha256: bytes,
    version: int,
    credential_sha256: bytes,
    previous_valid_seconds: int,
) -> bytes:
    """The bytes the platform signs to provision a credential, and the agent verifies."""
    return "|".join(
        (
            MESSAGE_LABEL,
            nonce.hex(),
            tls_key_sha256.hex(),
            str(version),
            credential_sha256.hex(),
            str(previous_valid_seconds),
        )
    ).encode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """The platform's Ed25519 public key from base64 of its 32 raw bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise CredentialError(
            "the platform key must be base64 of a 32-byte Ed25519 public key "
            "(python manage.py agent_provisioning_key prints it)"
        ) from None


@dataclass(frozen=True, slots=True)
class Entry:
    """One accepted credential: its digest, version and end of validity (None: current)."""

    sha256: bytes
    version: int
    valid_until: float | None = None

    def to_json(self) -> dict[str, Any]:
        until = self.valid_until
        return {
            "sha256": self.sha256.hex(),
            "version": self.version,
            "valid_until": None
            if until is None
            else datetime.fromtimestamp(until, UTC).isoformat(),
        }

    @classmethod
    def from_json(cls, item: Any) -> Entry:
        if not isinstance(item, dict):
            raise CredentialError("each credential must be an object")
        try:
            sha256 = bytes.fromhex(str(item["sha256"]))
            version = int(item.get("version", 0))
            until = item.get("valid_until")
            valid_until = None if until is None else datetime.fromisoformat(until).timestamp()
        except (KeyError, ValueError, TypeError) as exc:
            raise CredentialError(f"a credential entry is malformed: {exc}") from None
        if len(sha256) != 32:
            raise CredentialError("a credential's sha256 must be 64 hexadecimal characters")
        return cls(sha256=sha256, version=version, valid_until=valid_until)


def write_file(path: Path, entries: list[Entry]) -> None:
    """Replace the credentials file atomically, readable by its owner only."""
    body = json.dumps({"credentials": [entry.to_json() for entry in entries]}, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body + "\n")
        Path(tmp).chmod(0o600)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_file(path: Path) -> list[Entry]:
    """The entries of a credentials file; an absent file holds none."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise CredentialError(f"{path}: {exc}") from None
    items = data.get("credentials") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise CredentialError(f"{path}: expected {{'credentials': [...]}}")
    return [Entry.from_json(item) for item in items]


class CredentialStore:
    """The credentials this agent accepts, and the nonces it may be provisioned against."""

    def __init__(
        self,
        *,
        path: Path | None,
        platform_key: Ed25519PublicKey | None,
        tls_key: bytes | None,
    ) -> None:
        self.path = path
        self.platform_key = platform_key
        self.tls_key_sha256 = hashlib.sha256(tls_key or b"").digest()
        self._lock = threading.Lock()
        self._entries: list[Entry] = read_file(path) if path is not None else []
        self._file_state = self._stat()
        self._checked_at = time.monotonic()
        self._nonces: dict[bytes, float] = {}

    @property
    def current_version(self) -> int:
        current = [e.version for e in self._entries if e.valid_until is None]
        return max(current, default=0)

    def accepts(self, presented: str) -> bool:
        """Whether `presented` is an accepted credential; compared in constant time."""
        self._reload_if_changed()
        candidate = digest(presented)
        now = time.time()
        found = False
        # Every entry is compared, so the time taken does not say which one matched.
        for entry in self._entries:
            matched = hmac.compare_digest(candidate, entry.sha256)
            found |= matched and (entry.valid_until is None or entry.valid_until > now)
        return found

    def remember_nonce(self, nonce: bytes) -> None:
        """Note a nonce this agent answered in ``/attestation``."""
        now = time.monotonic()
        with self._lock:
            if len(self._nonces) >= MAX_REMEMBERED_NONCES:
                self._nonces = {
                    n: t for n, t in self._nonces.items() if t > now - NONCE_TTL_SECONDS
                }
                while len(self._nonces) >= MAX_REMEMBERED_NONCES:
                    self._nonces.pop(next(iter(self._nonces)))
            self._nonces[nonce] = now

    def provision(
        self,
        *,
        credential: str,
        version: int,
        previous_valid_seconds: int,
        nonce: bytes,
        signature: bytes,
    ) -> dict[str, Any]:
        """Install a credential sent by the platform, if the proof holds (else refuse)."""
        if self.platform_key is None:
            raise ProvisioningRefused(
                404, "This agent takes no provisioning: it has no platform key.", code="disabled"
            )
        credential_sha256 = digest(credential)
        message = provisioning_message(
            nonce=nonce,
            tls_key_sha256=self.tls_key_sha256,
            version=version,
            credential_sha256=credential_sha256,
            previous_valid_seconds=previous_valid_seconds,
        )
        try:
            self.platform_key.verify(signature, message)
        except InvalidSignature:
            raise ProvisioningRefused(
                403,
                "The provisioning signature does not verify for this agent.",
                code="invalid_signature",
            ) from None
        now = time.monotonic()
        with self._lock:
            answered = self._nonces.get(nonce)
            if answered is None or answered <= now - NONCE_TTL_SECONDS:
                raise ProvisioningRefused(
                    403,
                    "The nonce is not one this agent answered recently (or it was used).",
                    code="unknown_nonce",
                )
            current = self.current_version
            already = any(
                e.version == version and hmac.compare_digest(e.sha256, credential_sha256)
                for e in self._entries
                if e.valid_until is None
            )
            if not already and version <= current:
                raise ProvisioningRefused(
                    409,
                    f"This agent already holds credential version {current}; versions only go up.",
                    code="stale_version",
                )
            del self._nonces[nonce]
            if not already:
                self._replace(credential_sha256, version, previous_valid_seconds)
        return {"version": version, "changed": not already}

    def _replace(self, credential_sha256: bytes, version: int, previous_valid_seconds: int) -> None:
        now = time.time()
        grace_end = now + min(max(previous_valid_seconds, 0), MAX_GRACE_SECONDS)
        entries = [Entry(credential_sha256, version)]
        for entry in self._entries:
            # The credentials in force until now stay valid for the grace period only.
            until = grace_end if entry.valid_until is None else min(entry.valid_until, grace_end)
            if until > now:
                entries.append(Entry(entry.sha256, entry.version, until))
        if self.path is not None:
            write_file(self.path, entries)
            self._file_state = self._stat()
        self._entries = entries
        log.info(
            "credential version %s installed; the one it replaces ends in %d s",
            version,
            grace_end - now,
        )

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _reload_if_changed(self) -> None:
        if self.path is None or time.monotonic() - self._checked_at < RELOAD_INTERVAL_SECONDS:
            return
        with self._lock:
            self._checked_at = time.monotonic()
            state = self._stat()
            if state == self._file_state:
                return
            try:
                entries = read_file(self.path)
            except CredentialError as exc:
                # Keep serving with what was accepted before; a half-written file must
                # not lock the platform out.
                log.error("credentials file not reloaded: %s", exc)
                return
            self._entries, self._file_state = entries, state
            log.info("credentials file reloaded: %d credential(s)", len(entries))
