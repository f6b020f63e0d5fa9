"""Parsing the agent's `/attestation` reply into `Evidence`.

The agent answers a challenge with JSON of this shape::

    {"provider": "none" | "sev-snp" | "tdx", "confidential": bool,
     "nonce": hex, "report_data": hex (64 bytes),
     "tls_public_key": base64 DER SubjectPublicKeyInfo or null,
     "evidence": base64 or null, "auxblob": base64 or null,
     "generated_at": ISO 8601 with a time zone}

`evidence` is the SEV-SNP report or the TDX quote; `auxblob` is the SNP certificate table
or the TDX collateral JSON (see `Evidence`). Nothing in the reply is trusted: this only
checks its shape. The verifier for the backend's configured TEE type decides, and a reply
that names another provider fails with `wrong_tee_type`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from .results import Evidence, TeeType

# Quotes are about 5 KB, certificate tables and collateral tens of KB; anything far larger
# is not evidence and is refused before decoding.
MAX_FIELD_SIZE = 1 << 20


class AgentReplyError(ValueError):
    """The agent's reply is not a well-formed attestation reply."""


@dataclass(frozen=True)
class AgentReply:
    """The decoded reply. `evidence` is what to hand to a verifier."""

    evidence: Evidence
    confidential: bool
    nonce: bytes
    report_data: bytes
    tls_public_key: bytes | None
    generated_at: datetime


class _ReplyIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    provider: Literal["none", "sev-snp", "tdx"]
    confidential: bool
    nonce: str
    report_data: str
    tls_public_key: str | None = None
    evidence: str | None = None
    auxblob: str | None = None
    generated_at: AwareDatetime


def parse_agent_reply(data: str | bytes | dict[str, Any]) -> AgentReply:
    """Decode and shape-check an `/attestation` reply; raises `AgentReplyError`."""
    try:
        raw = json.loads(data) if isinstance(data, str | bytes) else data
        reply = _ReplyIn.model_validate(raw)
    except (ValueError, ValidationError, RecursionError) as exc:
        # RecursionError: a hostile reply can nest JSON deeply enough to exhaust the stack.
        raise AgentReplyError(f"malformed attestation reply: {exc}") from None
    tee_type = TeeType.from_provider(reply.provider)
    if reply.confidential != (tee_type != TeeType.NONE):
        raise AgentReplyError(
            f"provider {reply.provider!r} contradicts confidential={reply.confidential}"
        )
    nonce = _hex("nonce", reply.nonce)
    report_data = _hex("report_data", reply.report_data)
    if len(report_data) != 64:
        raise AgentReplyError("report_data must be 64 bytes")
    evidence = _base64("evidence", reply.evidence)
    if tee_type != TeeType.NONE and not evidence:
        raise AgentReplyError(f"provider {reply.provider!r} sent no evidence")
    return AgentReply(
        evidence=Evidence(
            tee_type=tee_type,
            # Without hardware, the self-reported report data is all there is to carry.
            report=evidence if tee_type != TeeType.NONE else report_data,
            auxblob=_base64("auxblob", reply.auxblob),
        ),
        confidential=reply.confidential,
        nonce=nonce,
        report_data=report_data,
        tls_public_key=_base64("tls_public_key", reply.tls_public_key),
        generated_at=reply.generated_at,
    )


def _hex(name: str, value: str) -> bytes:
    if len(value) > 2 * MAX_FIELD_SIZE:
        raise AgentReplyError(f"{name} is too large")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise AgentReplyError(f"{name} is not hex") from None


def _base64(name: str, value: str | None) -> bytes | None:
    if value is None:
        return None
    if len(value) > 2 * MAX_FIELD_SIZE:
        raise AgentReplyError(f"{name} is too large")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AgentReplyError(f"{name} is not base64") from None
