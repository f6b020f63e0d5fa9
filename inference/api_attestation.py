"""Attestation for clients: `/proxy/<domain-id>/attestation` and `.../attestation/policy`.

A client sends its own nonce; the platform forwards it to each backend's agent and returns
the fresh evidence as the agent sent it (so the client can verify it independently, e.g.
with `scripts/verify_attestation.py`), the parsed claims, the certificate chain and the
platform's own verification. Only backends serving a model the domain may use are shown;
any other backend is answered as if it did not exist.
"""

import re

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import ConfigDict, field_validator

from domains import permissions
from inference import attest
from inference.api import PATBearer, request_id_of
from inference.errors import APIError
from inference.models import Backend, Deployment, Model

router = Router(auth=PATBearer(), tags=["Attestation"])

NONCE_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class AttestationIn(Schema):
    """`nonce`: 32 random bytes as 64 hex digits; `backend` or `model` narrows the answer."""

    model_config = ConfigDict(extra="forbid")

    nonce: str
    backend: str | None = None
    model: str | None = None

    @field_validator("nonce")
    @classmethod
    def _nonce(cls, value: str) -> str:
        if not NONCE_RE.fullmatch(value):
            raise ValueError("must be 64 hexadecimal characters (32 random bytes)")
        return value.lower()


def _visible_backends(domain_id: str, *, backend: str | None, model: str | None) -> list[Backend]:
    """Enabled backends serving a model the domain may use, narrowed as asked."""
    models = Model.objects.for_domain(domain_id)
    if model is not None:
        models = models.filter(name=model)
    deployments = Deployment.objects.filter(
        model__in=models, enabled=True, backend__enabled=True
    ).exclude(backend__tee_type=Backend.TeeType.NONE, backend__allow_not_confidential=False)
    rows = Backend.objects.filter(pk__in=deployments.values("backend_id"))
    if backend is not None:
        rows = rows.filter(name=backend)
    found = list(rows.order_by("name"))
    if not found and (backend is not None or model is not None):
        param = "backend" if backend is not None else "model"
        raise APIError(
            404,
            f"No {param} of that name serves this domain.",
            param=param,
            code=f"{param}_not_found",
        )
    return found


@router.post("/attestation", url_name="attestation")
async def attestation(request: HttpRequest, body: AttestationIn):
    """Fresh evidence from each backend for the client's nonce, with the verification."""
    request_id_of(request)
    request.auth.require(permissions.ATTESTATION_READ)
    backends = await sync_to_async(_visible_backends)(
        request.auth.domain_id, backend=body.backend, model=body.model
    )
    nonce = bytes.fromhex(body.nonce)
    data = []
    for backend in backends:
        challenge, pinned = await attest.client_challenge(backend=backend, nonce=nonce)
        reply = challenge.reply or {}
        data.append(
            {
                "object": "attestation",
                "backend": backend.name,
                "tee_type": backend.tee_type,
                "confidential": backend.tee_type != Backend.TeeType.NONE,
                "status": backend.attestation_status,
                "attested_at": backend.attested_at.isoformat() if backend.attested_at else None,
                "binding": attest.BINDING,
                # The agent's reply, untouched: what an independent verifier checks.
                "attestation": reply or None,
                "report_data": reply.get("report_data"),
                "tls_public_key": reply.get("tls_public_key"),
                "tls_public_key_sha256": challenge.key_sha256 or None,
                "pinned": bool(pinned) and challenge.key_sha256 == pinned,
                "verification": {
                    "ok": challenge.ok,
                    "failures": [failure.to_dict() for failure in challenge.result.failures],
                    "claims": challenge.result.claims,
                    "policy_version": challenge.policy_version,
                },
                "cert_chain": challenge.result.cert_chain,
            }
        )
    return {"object": "list", "nonce": body.nonce, "data": data}


@router.get("/attestation/policy", url_name="attestation_policy")
async def attestation_policy(request: HttpRequest):
    """The active attestation policy of each backend serving the domain."""
    request_id_of(request)
    request.auth.require(permissions.ATTESTATION_READ)

    def load() -> list[dict]:
        backends = _visible_backends(request.auth.domain_id, backend=None, model=None)
        return [attest.policy_export(backend=backend) for backend in backends]

    return {"object": "list", "data": await sync_to_async(load)()}
