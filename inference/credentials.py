"""The credential the platform sends each backend (`Authorization: Bearer`), and how an agent
gets its own.

A backend's credential is either generated and stored here, encrypted at rest (Fernet, with
a key derived from `DJANGO_SECRET_KEY`; keys in `DJANGO_SECRET_KEY_FALLBACKS` still decrypt),
or an environment reference: `api_key_env` names a variable that must start with
`ENV_PREFIX`, so no platform secret (`CUBEAI_TOKEN_PEPPERS`...) can be sent to a backend.

An agent with `provision_credential` is given its credential by the platform, right after a
challenge of its attestation passed: the platform signs (Ed25519, `CUBEAI_AGENT_PROVISIONING_KEY`)
the challenge's nonce, the attested TLS key, the credential's version and digest, and sends
all of it to the agent's `POST /credentials` over a connection that must present the attested
key. `agent/credentials.py` is the agent's side; `agent/README.md` says why it is sound.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import http.client
import json
import logging
import os
import re
import secrets
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent.credentials import digest, provisioning_message
from cubeai.exceptions import Conflict, DomainError
from domains.services import Invalid
from inference import attestation as att
from inference.models import API_KEY_ENV_PATTERN, AttestationRecord, Backend, registry_changed

log = logging.getLogger(__name__)

ENV_PREFIX = "CUBEAI_BACKEND_KEY_"  # see API_KEY_ENV_PATTERN
CREDENTIAL_PREFIX = "cube_bk_"
MAX_GRACE_SECONDS = 24 * 3600
# The agent's answer is a few hundred bytes; never buffer more than this.
MAX_REPLY_BYTES = 64 * 1024


class CredentialNotDelivered(DomainError):
    """The agent did not take its new credential; the one in force stays in force."""

    status = 502
    code = "credential_not_delivered"


def _derived(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode()
    )


@functools.cache
def _fernet(secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    keys = [secret_key, *fallbacks]
    return MultiFernet(
        [
            Fernet(base64.urlsafe_b64encode(_derived(key, b"cubeai backend credentials")))
            for key in keys
        ]
    )


def _cipher() -> MultiFernet:
    return _fernet(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


def encrypt(credential: str) -> str:
    return _cipher().encrypt(credential.encode()).decode()


def decrypt(token: str) -> str:
    return _cipher().decrypt(token.encode()).decode()


def credential_generate() -> str:
    """A new random credential, prefixed so secret scanners can recognise a leaked one."""
    return CREDENTIAL_PREFIX + secrets.token_urlsafe(32)


def env_name_allowed(name: str) -> bool:
    return re.fullmatch(API_KEY_ENV_PATTERN, name) is not None


def backend_credential(backend: Backend) -> str:
    """What the platform sends the backend as its Bearer credential ("" for none)."""
    if backend.credential:
        try:
            return decrypt(backend.credential)
        except InvalidToken:
            log.error(
                "the credential of backend %s cannot be decrypted (was DJANGO_SECRET_KEY "
                "changed without keeping the old one in DJANGO_SECRET_KEY_FALLBACKS?)",
                backend.name,
            )
            return ""
    if backend.api_key_env and env_name_allowed(backend.api_key_env):
        return os.environ.get(backend.api_key_env, "")
    return ""


def next_version(backend: Backend) -> int:
    """Versions only go up, also past a database restored from an older backup."""
    return max(backend.credential_version + 1, int(time.time()))


def credential_problem(credential: str) -> str | None:
    """Why `credential` cannot be sent as a Bearer credential, or None."""
    if not 16 <= len(credential) <= 512 or not (credential.isascii() and credential.isprintable()):
        return "Use 16 to 512 printable ASCII characters."
    if " " in credential:
        return "A credential has no spaces."
    return None


def backend_credential_set(*, backend: Backend, credential: str) -> Backend:
    """Store `credential` (encrypted) as the backend's, replacing any environment reference."""
    problem = credential_problem(credential)
    if problem:
        raise Invalid({"credential": [problem]})
    backend.credential = encrypt(credential)
    backend.credential_version = next_version(backend)
    backend.credential_rotated_at = timezone.now()
    backend.api_key_env = ""
    Backend.objects.filter(pk=backend.pk).update(
        credential=backend.credential,
        credential_version=backend.credential_version,
        credential_rotated_at=backend.credential_rotated_at,
        api_key_env="",
        updated_at=timezone.now(),
    )
    registry_changed()
    return backend


# Provisioning ---------------------------------------------------------------------------


def provisioning_key() -> Ed25519PrivateKey:
    """The platform's signing key for provisioning: `CUBEAI_AGENT_PROVISIONING_KEY` (base64
    of a 32-byte seed), or one derived from the secret key."""
    configured = settings.CUBEAI_AGENT_PROVISIONING_KEY
    seed = (
        base64.b64decode(configured)
        if configured
        else _derived(settings.SECRET_KEY, b"cubeai agent provisioning")
    )
    return Ed25519PrivateKey.from_private_bytes(seed)


def provisioning_public_key() -> str:
    """Base64 of the public key, for the agents' `CUBEAI_AGENT_PLATFORM_KEY`."""
    raw = provisioning_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _unverified_tls() -> ssl.SSLContext:
    # The agent's certificate is self-signed: trust comes from comparing its key with the
    # attested one before anything is sent, never from a CA.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _connection(backend: Backend, record: AttestationRecord) -> http.client.HTTPConnection:
    """A connection to the agent that presents the key `record` attested, or an error."""
    url = urlsplit(backend.base_url)
    timeout = settings.CUBEAI_ATTESTATION_TIMEOUT_SECONDS
    if url.scheme != "https":
        if backend.tee_type != Backend.TeeType.NONE:
            raise CredentialNotDelivered("A confidential backend gets its credential over https.")
        # A backend without a TEE is sent everything in clear, prompts included; the
        # operator chose that with `allow_not_confidential`.
        return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    connection = http.client.HTTPSConnection(
        url.hostname, url.port or 443, timeout=timeout, context=_unverified_tls()
    )
    connection.connect()
    der = connection.sock.getpeercert(binary_form=True) or b""
    try:
        presented = hashlib.sha256(att.spki_of_certificate(der)).hexdigest()
    except ValueError:
        presented = ""
    if not record.key_sha256 or not hmac.compare_digest(presented, record.key_sha256):
        connection.close()
        raise CredentialNotDelivered("The agent's TLS key is not the key it just attested.")
    return connection


def credential_deliver(
    *,
    backend: Backend,
    record: AttestationRecord,
    credential: str,
    version: int,
    previous_valid_seconds: int = 0,
) -> dict[str, Any]:
    """Send the agent `credential`, bound to the challenge `record` that just passed."""
    if not record.ok or not record.nonce:
        raise CredentialNotDelivered("Only a passed attestation challenge can carry a credential.")
    tls_key = base64.b64decode(record.tls_public_key) if record.tls_public_key else b""
    nonce = bytes.fromhex(record.nonce)
    message = provisioning_message(
        nonce=nonce,
        tls_key_sha256=hashlib.sha256(tls_key).digest(),
        version=version,
        credential_sha256=digest(credential),
        previous_valid_seconds=previous_valid_seconds,
    )
    body = json.dumps(
        {
            "credential": credential,
            "version": version,
            "previous_valid_seconds": previous_valid_seconds,
            "nonce": nonce.hex(),
            "signature": base64.b64encode(provisioning_key().sign(message)).decode(),
        }
    )
    path = urlsplit(backend.base_url).path.rstrip("/").removesuffix("/v1") + "/credentials"
    try:
        connection = _connection(backend, record)
        try:
            connection.request(
                "POST", path, body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            reply = response.read(MAX_REPLY_BYTES)
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as exc:
        raise CredentialNotDelivered(
            f"The agent could not be reached: {type(exc).__name__}."
        ) from None
    if response.status != 200:
        try:
            error = json.loads(reply)["error"]
            reason = f"{error.get('code')}: {error.get('message')}"
        except (ValueError, KeyError, TypeError):
            reason = "no reason given"
        raise CredentialNotDelivered(
            f"The agent refused the credential (HTTP {response.status}, {reason})."
        )
    return json.loads(reply)


def backend_credential_deliver_stored(*, backend: Backend, record: AttestationRecord) -> None:
    """After a passed periodic challenge: give the agent its credential, generating the first
    one. Delivering the credential the agent already holds changes nothing there; an agent
    that restarted without its state gets it back within one attestation period."""
    fresh = Backend.objects.get(pk=backend.pk)
    if not fresh.credential:
        backend_credential_rotate(backend=fresh, record=record)
        return
    credential_deliver(
        backend=fresh,
        record=record,
        credential=decrypt(fresh.credential),
        version=fresh.credential_version,
    )


def backend_credential_rotate(
    *, backend: Backend, grace_seconds: int = 0, record: AttestationRecord | None = None
) -> Backend:
    """Give a provisioned agent a new credential; the old one stays valid for `grace_seconds`
    there, so replicas still sending it are not refused while they pick up the new one.

    A fresh challenge must pass first (unless `record` is one that just did); the new
    credential is stored only once the agent has taken it.
    """
    from inference.attestation.services import backend_attest

    if not backend.provision_credential:
        raise Invalid({"provision_credential": ["Only a provisioned agent's credential rotates."]})
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise Invalid({"grace_seconds": ["Between 0 and 86400 seconds."]})
    with transaction.atomic():
        # One rotation at a time: two would race for the same version at the agent.
        row = Backend.objects.select_for_update().get(pk=backend.pk)
        if record is None:
            record = backend_attest(
                backend=row, trigger=AttestationRecord.Trigger.ON_DEMAND, deliver=False
            )
            if not record.ok:
                reasons = "; ".join(f["message"] for f in record.failures)
                raise CredentialNotDelivered(f"The attestation challenge failed: {reasons}")
        credential, version = credential_generate(), next_version(row)
        credential_deliver(
            backend=row,
            record=record,
            credential=credential,
            version=version,
            previous_valid_seconds=grace_seconds,
        )
        updated = Backend.objects.filter(pk=row.pk, credential_version=row.credential_version)
        if not updated.update(
            credential=encrypt(credential),
            credential_version=version,
            credential_rotated_at=timezone.now(),
            updated_at=timezone.now(),
        ):
            raise Conflict("The credential changed meanwhile; rotate again.")
        registry_changed()
    log.info("credential of backend %s rotated to version %s", backend.name, version)
    backend.refresh_from_db()
    return backend
