"""Verifying saved evidence from files, for operators and auditors (no network, no database).

`verify_offline` backs `python manage.py verify_evidence`. It reads

- the evidence: a raw SEV-SNP report or TDX quote, the same as hex or base64 text, or
  JSON: an agent's `/attestation` reply, one item of the platform's attestation answer or
  a record downloaded from the attestation page (the `attestation` object inside it, and
  its `cert_chain` if it has one);
- for SEV-SNP, optionally the VCEK/VLEK certificate (`certificate`, DER or PEM) and a PEM
  bundle (`chain`) as KDS serves it: any VCEK/VLEK in it is used when no other is given,
  and every ASK, ASVK or ARK in it must be one of the pinned certificates (a different one
  is reported as `root_not_trusted`, though verification never uses it);
- the collateral: for TDX the dcap-qvl `QuoteCollateralV3` JSON, for SEV-SNP an AMD CRL
  of the report's product line (DER or PEM);
- a policy document (JSON, as the platform stores it); without one, only authenticity is
  checked (`verify_genuine`) and the result says `"policy": null`.

and answers a JSON-serialisable dict: `ok`, `failures` (code and message), `claims`,
`cert_chain`, the normalised `policy` and, with a policy, `policy_fields` (pinned or open).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from pydantic import ValidationError

from . import roots
from .agent import AgentReplyError, parse_agent_reply
from .certs import CERTIFICATE_ERRORS, common_name, load_certificate, sha256_fingerprint
from .crl import crl_name
from .policy import policy_from_json
from .results import Evidence, Failure, FailureCode, TeeType, VerificationResult
from .review import policy_review
from .snp import VCEK_GUID, VLEK_GUID, SnpVerifier, build_cert_table, parse_cert_table
from .snp_report import GENOA, MILAN, TURIN, ReportError
from .tdx import TdxVerifier

MAX_INPUT_SIZE = 4 << 20
_LEAVES = {"SEV-VCEK": VCEK_GUID, "SEV-VLEK": VLEK_GUID}


class OfflineInputError(ValueError):
    """A file given to the offline verifier cannot be used at all."""


def verify_offline(
    provider: str,
    evidence: bytes,
    *,
    now: datetime,
    certificate: bytes | None = None,
    chain: bytes | None = None,
    collateral: bytes | None = None,
    policy: bytes | None = None,
    vcek_cache: Path | str | None = None,
    crl_dir: Path | str | None = None,
    collateral_cache: Path | str | None = None,
) -> dict[str, Any]:
    """Verify evidence read from files as of `now`; raises `OfflineInputError` only for
    input that is not evidence, a certificate or a policy at all."""
    if provider not in ("sev-snp", "tdx"):
        raise OfflineInputError(f"the TEE must be sev-snp or tdx, not {provider!r}")
    tee = TeeType.from_provider(provider)
    for name, data in (
        ("evidence", evidence),
        ("certificate", certificate),
        ("chain", chain),
        ("collateral", collateral),
        ("policy", policy),
    ):
        if data is not None and len(data) > MAX_INPUT_SIZE:
            raise OfflineInputError(f"the {name} file is larger than {MAX_INPUT_SIZE} bytes")
    loaded, saved_chain = read_evidence(tee, evidence)
    extra: list[Failure] = []
    if tee == TeeType.SEV_SNP:
        loaded, extra = _with_snp_certificates(loaded, certificate, chain or saved_chain)
        crls = _crl_for_every_chain(collateral) if collateral is not None else crl_dir
        verifier: SnpVerifier | TdxVerifier = SnpVerifier(vcek_cache=vcek_cache, crls=crls)
    else:
        if certificate is not None or chain is not None:
            raise OfflineInputError("--certificate and --chain apply to sev-snp evidence only")
        if collateral is not None:
            loaded = Evidence(loaded.tee_type, loaded.report, collateral)
        verifier = TdxVerifier(collateral_cache=collateral_cache)
    document = _policy_document(policy)
    if document is None:
        result = verifier.verify_genuine(loaded, now=now)
    else:
        result = verifier.verify(loaded, document, now=now)
    combined = VerificationResult.from_checks(
        result.tee_type, [*extra, *result.failures], result.claims, result.cert_chain
    )
    output: dict[str, Any] = {
        "tee": tee.provider,
        "now": now.isoformat(),
        **combined.to_dict(),
        "policy": None,
        "policy_fields": None,
    }
    if document is not None:
        try:
            checked = policy_from_json(tee, document)
        except ValidationError:
            # The verifier has reported `invalid_policy` with the details already.
            return output
        output["policy"] = checked.model_dump(mode="json")
        output["policy_fields"] = [field.to_dict() for field in policy_review(checked)]
    return output


def read_evidence(tee: TeeType, data: bytes) -> tuple[Evidence, bytes | None]:
    """The evidence in a file, and the PEM certificate chain saved beside it, if any."""
    text = _as_text(data)
    if text is not None and text.lstrip().startswith("{"):
        return _from_json(text)
    if text is not None:
        compact = re.sub(r"\s+", "", text)
        if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", compact):
            return Evidence(tee, bytes.fromhex(compact)), None
        try:
            return Evidence(tee, base64.b64decode(compact, validate=True)), None
        except (binascii.Error, ValueError):
            raise OfflineInputError(
                "the evidence file is text but neither JSON, hex nor base64"
            ) from None
    return Evidence(tee, data), None


def _as_text(data: bytes) -> str | None:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c.isspace() for c in text) else None


def _from_json(text: str) -> tuple[Evidence, bytes | None]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise OfflineInputError(f"the evidence file is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OfflineInputError("the evidence JSON must be an object")
    if isinstance(document.get("data"), list):
        items = document["data"]
        if len(items) != 1:
            raise OfflineInputError(
                f"the file lists {len(items)} backends; save the one item to verify"
            )
        document = items[0]
    reply = document.get("attestation", document)
    chain = document.get("cert_chain") or (document.get("verification") or {}).get("cert_chain")
    try:
        parsed = parse_agent_reply(reply if isinstance(reply, dict) else {})
    except AgentReplyError as exc:
        raise OfflineInputError(f"the evidence JSON is not an attestation reply: {exc}") from None
    saved_chain = "".join(chain).encode() if isinstance(chain, list) and chain else None
    return parsed.evidence, saved_chain


def _with_snp_certificates(
    evidence: Evidence, certificate: bytes | None, chain: bytes | None
) -> tuple[Evidence, list[Failure]]:
    """Put the given endorsement certificate into the evidence's certificate table, and
    check that every intermediate and root in `chain` is a pinned one."""
    failures: list[Failure] = []
    try:
        table = parse_cert_table(evidence.auxblob) if evidence.auxblob else {}
    except ReportError:
        # The verifier reports the malformed table itself.
        return evidence, []
    chain_leaves: dict[uuid.UUID, bytes] = {}
    for cert in _pem_certificates(chain) if chain else []:
        name = common_name(cert.subject)
        if name in _LEAVES:
            chain_leaves.setdefault(_LEAVES[name], cert.public_bytes(Encoding.DER))
        elif sha256_fingerprint(cert) not in roots.PINNED_SHA256.values():
            failures.append(
                Failure(
                    FailureCode.ROOT_NOT_TRUSTED,
                    f"the chain holds {name or cert.subject.rfc4514_string()} "
                    f"(SHA-256 {sha256_fingerprint(cert)}), which is not a pinned AMD "
                    "certificate; the pinned ones are used instead",
                )
            )
    for guid, der in chain_leaves.items():
        table.setdefault(guid, der)
    if certificate is not None:
        try:
            cert = load_certificate(certificate)
            guid = _LEAVES.get(common_name(cert.subject), VCEK_GUID)
        except CERTIFICATE_ERRORS as exc:
            raise OfflineInputError(f"the certificate file is not a certificate: {exc}") from None
        table[guid] = certificate
    if not table:
        return evidence, failures
    return Evidence(evidence.tee_type, evidence.report, build_cert_table(table)), failures


def _pem_certificates(data: bytes) -> list[x509.Certificate]:
    with warnings.catch_warnings():
        # AMD's VCEKs have serial number 0; see `certs`.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        try:
            return x509.load_pem_x509_certificates(data)
        except CERTIFICATE_ERRORS as exc:
            raise OfflineInputError(f"the chain file is not a PEM bundle: {exc}") from None


def _crl_for_every_chain(data: bytes) -> Mapping[str, bytes]:
    # The verifier checks the CRL against the pinned ARK of the report's own product line,
    # so one CRL can be offered under every name: a wrong line's CRL fails as not AMD's.
    return {
        crl_name(product, key): data
        for product in (MILAN, GENOA, TURIN)
        for key in ("vcek", "vlek")
    }


def _policy_document(policy: bytes | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    try:
        document = json.loads(policy)
    except (ValueError, RecursionError) as exc:
        raise OfflineInputError(f"the policy file is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OfflineInputError("the policy file must hold a JSON object")
    # An exported policy (`?format=export`) wraps the document.
    if "policy" in document and "tee_type" in document and isinstance(document["policy"], dict):
        return document["policy"]
    return document
