"""AMD certificate revocation lists, supplied by the operator and never fetched.

AMD's KDS publishes, per product line, a CRL signed by that line's ARK, which revokes
ASKs (`https://kdsintf.amd.com/vcek/v1/<product>/crl`) and ASVKs
(`https://kdsintf.amd.com/vlek/v1/<product>/crl`). VCEKs and VLEKs are never listed: they
are issued by the ASK/ASVK, not the ARK, and a newer TCB supersedes them instead.

The operator downloads these files (a cron job, or by hand) into the folder named by
`CUBEAI_ATTESTATION_AMD_CRL_DIR`, as

    <product>.crl        the VCEK chain's CRL, e.g. Milan.crl
    <product>-vlek.crl   the VLEK chain's CRL, e.g. Genoa-vlek.crl

in DER (as KDS serves them) or PEM. The verifier never goes to the network: a request
must not wait on AMD, and an attacker who can block AMD must not be able to choose whether
a check happens. When a CRL for the chain is present it must be genuine (issued and signed
by the pinned ARK) and current (`thisUpdate <= now <= nextUpdate`), and the chain's
intermediate must not be on it. When none is present, the policy's `require_crl` decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from .certs import CERTIFICATE_ERRORS
from .results import Failure, FailureCode
from .roots import AmdChain

# AMD's CRLs are a few KB; anything far larger is not one.
MAX_CRL_SIZE = 1 << 20


def crl_name(product: str, signing_key: str) -> str:
    """The file stem (and mapping key) of the CRL for a product line's VCEK or VLEK chain."""
    return product if signing_key == "vcek" else f"{product}-vlek"


def load_crl(source: Mapping[str, bytes] | Path | None, name: str) -> bytes | None:
    """The CRL bytes named `name` from a mapping or a folder (`<name>.crl`), if any."""
    if source is None:
        return None
    if isinstance(source, Path):
        path = source / f"{name}.crl"
        return path.read_bytes() if path.is_file() else None
    return source.get(name)


def check_crl(
    data: bytes | None,
    chain: AmdChain,
    *,
    now: datetime,
    required: bool,
    claims: dict[str, Any],
) -> list[Failure]:
    """Check the chain's intermediate against an ARK-signed CRL, if one was supplied."""
    if data is None:
        claims["crl"] = {"checked": False}
        if required:
            name = crl_name(chain.product, chain.signing_key)
            return [
                Failure(
                    FailureCode.CRL_MISSING,
                    f"the policy requires a CRL and there is none for {name} "
                    f"(put AMD's {name}.crl into the CRL folder)",
                )
            ]
        return []
    if len(data) > MAX_CRL_SIZE:
        return [Failure(FailureCode.CRL_INVALID, "the CRL file is too large to be AMD's")]
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        issuer = crl.issuer
        this_update = crl.last_update_utc
        next_update = crl.next_update_utc
        genuine = issuer == chain.root.subject and crl.is_signature_valid(chain.root.public_key())
    except CERTIFICATE_ERRORS as exc:
        return [Failure(FailureCode.CRL_INVALID, f"the CRL cannot be read: {exc}")]
    ark = chain.root.subject.rfc4514_string()
    if not genuine:
        return [
            Failure(
                FailureCode.CRL_INVALID,
                f"the CRL for {chain.product} is not issued and signed by the pinned {ark}",
            )
        ]
    if next_update is None:
        return [Failure(FailureCode.CRL_INVALID, "the CRL has no nextUpdate")]
    claims["crl"] = {
        "checked": True,
        "this_update": this_update.isoformat(),
        "next_update": next_update.isoformat(),
        "revoked_count": len(crl),
    }
    failures: list[Failure] = []
    if not this_update <= now <= next_update:
        failures.append(
            Failure(
                FailureCode.COLLATERAL_NOT_VALID_NOW,
                f"the {chain.product} CRL is valid {this_update.isoformat()} .. "
                f"{next_update.isoformat()}, not at {now.isoformat()}; fetch a fresh one",
            )
        )
    revoked = crl.get_revoked_certificate_by_serial_number(chain.intermediate.serial_number)
    if revoked is not None:
        failures.append(
            Failure(
                FailureCode.CERTIFICATE_REVOKED,
                f"AMD revoked {chain.intermediate.subject.rfc4514_string()} "
                f"on {revoked.revocation_date_utc.isoformat()}",
            )
        )
    return failures
