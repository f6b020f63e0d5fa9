"""Pinned vendor trust anchors, shipped in `trust/` beside this module.

The AMD ARKs and their ASK (VCEK) and ASVK (VLEK) intermediates for Milan, Genoa and
Turin, and the Intel SGX Root CA, are the only certificates we trust as issuers; whatever
intermediates or roots a guest sends are ignored. Each file's SHA-256 (of the DER
encoding) is pinned here and checked when the file is first loaded, so a swapped file
fails closed. The values are the ones published with the test data
(`tests/attestation/data/README.md`); every one was compared with the copies in
google/go-sev-guest `verify/trust/`, virtee/sev and confidential-containers/trustee, which
agree byte for byte.

`check_pinned_roots()` loads everything once; call it from a start-up check to fail
early rather than on the first attestation.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from .certs import load_certificate

TRUST_DIR = Path(__file__).resolve().parent / "trust"

PINNED_SHA256 = {
    "ark_milan.pem": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "ask_milan.pem": "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    "asvk_milan.pem": "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    "ark_genoa.pem": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "ask_genoa.pem": "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    "asvk_genoa.pem": "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    "ark_turin.pem": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    "ask_turin.pem": "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    "asvk_turin.pem": "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
    "intel_sgx_root_ca.der": "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3",
}


class PinnedRootError(RuntimeError):
    """A shipped trust anchor is missing or does not match its pinned hash."""


@dataclass(frozen=True)
class AmdChain:
    """The pinned issuers for one kind of AMD endorsement key on one product line."""

    product: str
    signing_key: str
    intermediate: x509.Certificate
    root: x509.Certificate


# Keyed by the common name of the VCEK/VLEK issuer, which is how a leaf names its chain.
_AMD_CHAINS = {
    "SEV-Milan": ("Milan", "vcek", "ask_milan.pem", "ark_milan.pem"),
    "SEV-VLEK-Milan": ("Milan", "vlek", "asvk_milan.pem", "ark_milan.pem"),
    "SEV-Genoa": ("Genoa", "vcek", "ask_genoa.pem", "ark_genoa.pem"),
    "SEV-VLEK-Genoa": ("Genoa", "vlek", "asvk_genoa.pem", "ark_genoa.pem"),
    "SEV-Turin": ("Turin", "vcek", "ask_turin.pem", "ark_turin.pem"),
    "SEV-VLEK-Turin": ("Turin", "vlek", "asvk_turin.pem", "ark_turin.pem"),
}

# The AMD product lines we can verify, in the order AMD shipped them.
AMD_PRODUCTS = ("Milan", "Genoa", "Turin")


@functools.cache
def _load_pinned(name: str) -> x509.Certificate:
    path = TRUST_DIR / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PinnedRootError(f"pinned certificate {name} cannot be read: {exc}") from None
    cert = load_certificate(data)
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    if digest != PINNED_SHA256[name]:
        raise PinnedRootError(f"pinned certificate {name} has SHA-256 {digest}, expected pin")
    return cert


@functools.cache
def amd_chain(issuer_common_name: str) -> AmdChain | None:
    """The pinned ASK/ASVK and ARK for a leaf issued by `issuer_common_name`, if any.

    The pinned intermediate's signature by the pinned ARK and the ARK's self-signature are
    checked here once, so a mismatched pair can never be used.
    """
    entry = _AMD_CHAINS.get(issuer_common_name)
    if entry is None:
        return None
    product, signing_key, intermediate_name, root_name = entry
    intermediate = _load_pinned(intermediate_name)
    root = _load_pinned(root_name)
    try:
        root.verify_directly_issued_by(root)
        intermediate.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise PinnedRootError(
            f"pinned AMD chain for {issuer_common_name} is broken: {exc}"
        ) from None
    return AmdChain(product, signing_key, intermediate, root)


def intel_root_der() -> bytes:
    """The pinned Intel SGX Root CA, DER, for dcap-qvl."""
    return _load_pinned("intel_sgx_root_ca.der").public_bytes(Encoding.DER)


def check_pinned_roots() -> None:
    """Load and check every pinned certificate; raises `PinnedRootError` on a problem."""
    for issuer in _AMD_CHAINS:
        amd_chain(issuer)
    intel_root_der()
