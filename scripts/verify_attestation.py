#!/usr/bin/env python3
"""Verify a Cube AI backend's attestation yourself, without trusting the platform.

Fetch fresh evidence (the platform forwards your nonce to the backend's agent) or read a
saved reply, then check it against the vendors' roots:

    python verify_attestation.py --url https://cube.example/proxy/<domain-id>/attestation \
        --token "$CUBE_PAT" --measurement <hex>
    python verify_attestation.py --file reply.json --measurement <hex> --now 2025-07-01T00:00:00Z

SEV-SNP: the report's ECDSA P-384 signature by the VCEK/VLEK, the VCEK <- ASK <- ARK chain
(RSA-PSS), the ARK and ASK pinned by SHA-256 below, hwID and TCB extensions, debug off.
TDX: dcap-qvl checks the quote against Intel's root and the collateral; status must be
UpToDate. For both, REPORT_DATA must equal SHA-512(nonce || TLS public key DER) when the
reply carries a key. Needs only `cryptography` and `dcap-qvl`. Exit status 0 means verified.
"""

import argparse
import base64
import hashlib
import json
import secrets
import struct
import sys
import urllib.request
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

# SHA-256 of the DER of AMD's ARKs, ASKs and ASVK (as published at kdsintf.amd.com).
PINNED_AMD = {
    "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd": "ARK-Milan",
    "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b": "SEV-Milan",
    "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5": "SEV-VLEK-Milan",
    "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1": "ARK-Genoa",
    "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521": "SEV-Genoa",
}
GUIDS = {  # extended-report certificate table entries
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}
AMD_OID = "1.3.6.1.4.1.3704.1."


def load_cert(data):
    # AMD endorsement keys have serial number 0, which cryptography warns about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]


def cert_table(blob):
    certs, pos = {}, 0
    while pos + 24 <= len(blob):
        guid, offset, length = struct.unpack_from("<16sII", blob, pos)
        pos += 24
        if guid == bytes(16):
            return certs
        if uuid.UUID(bytes=guid) in GUIDS and offset + length <= len(blob):
            certs[GUIDS[uuid.UUID(bytes=guid)]] = load_cert(blob[offset : offset + length])[0]
    raise ValueError("malformed certificate table")


def ext(cert, suffix):
    return cert.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(AMD_OID + suffix)
    ).value.value


def verify_snp(report, auxblob, args, now):
    if len(report) != 1184 or int.from_bytes(report[:4], "little") not in (2, 3):
        return ["not an SNP report of version 2 or 3"]
    key = "vlek" if (int.from_bytes(report[0x48:0x4C], "little") >> 2) & 7 == 1 else "vcek"
    certs = cert_table(auxblob) if auxblob else {}
    if args.vcek:
        certs[key] = load_cert(Path(args.vcek).read_bytes())[0]
    if args.chain:
        certs["ask"], certs["ark"] = load_cert(Path(args.chain).read_bytes())[:2]
    if not all(name in certs for name in (key, "ask", "ark")):
        return [f"need the {key.upper()}, ASK and ARK certificates (--vcek, --chain)"]
    leaf, ask, ark = certs[key], certs["ask"], certs["ark"]
    errors = []
    for cert in (ask, ark):
        if cert.fingerprint(hashes.SHA256()).hex() not in PINNED_AMD:
            errors.append(f"{cert.subject.rfc4514_string()} is not a pinned AMD certificate")
    for child, parent in ((ark, ark), (ask, ark), (leaf, ask)):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:
            errors.append(f"{child.subject.rfc4514_string()} is not signed by its issuer")
    for cert in (leaf, ask, ark):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            errors.append(f"{cert.subject.rfc4514_string()} is not valid at {now}")
    r, s = (int.from_bytes(report[o : o + 72], "little") for o in (0x2A0, 0x2E8))
    try:
        sig = encode_dss_signature(r, s)
        leaf.public_key().verify(sig, report[:0x2A0], ec.ECDSA(hashes.SHA384()))
    except Exception:
        errors.append("report signature is invalid")
    tcb = report[0x180:0x188]
    for suffix, index in (("3.1", 0), ("3.2", 1), ("3.3", 6), ("3.8", 7)):
        if int.from_bytes(ext(leaf, suffix)[2:], "big") != tcb[index]:
            errors.append("certificate TCB differs from REPORTED_TCB")
    if key == "vcek" and ext(leaf, "4") != report[0x1A0:0x1E0]:
        errors.append("VCEK is for another chip")
    if (int.from_bytes(report[8:16], "little") >> 19) & 1 and not args.allow_debug:
        errors.append("guest policy allows debugging")
    return errors + check_claims(report[0x90:0xC0], report[0x50:0x90], args)


def verify_tdx(quote, auxblob, args, now):
    collateral = Path(args.collateral).read_text() if args.collateral else auxblob.decode()
    try:
        result = dcap_qvl.verify(
            quote, dcap_qvl.QuoteCollateralV3.from_json(collateral), int(now.timestamp())
        )
    except ValueError as exc:
        return [f"quote does not verify: {exc}"]
    errors = [] if result.status == "UpToDate" else [f"TCB status is {result.status}"]
    body = 54 if int.from_bytes(quote[:2], "little") == 5 else 48
    if quote[body + 120] & 1 and not args.allow_debug:
        errors.append("TD has DEBUG set")
    return errors + check_claims(
        quote[body + 136 : body + 184], quote[body + 520 : body + 584], args
    )


def check_claims(measurement, report_data, args):
    print(f"measurement {measurement.hex()}\nreport_data {report_data.hex()}")
    errors = []
    if args.measurement and measurement.hex() not in args.measurement:
        errors.append("measurement is not one of --measurement")
    if args.reply.get("tls_public_key"):
        key = base64.b64decode(args.reply["tls_public_key"])
        nonce = bytes.fromhex(args.nonce or args.reply["nonce"])
        if hashlib.sha512(nonce + key).digest() != report_data:
            errors.append("REPORT_DATA does not bind the nonce and TLS key")
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="the platform's POST /proxy/<domain-id>/attestation URL")
    parser.add_argument("--token", help="your personal access token, for --url")
    parser.add_argument("--file", help="a saved attestation reply (JSON)")
    parser.add_argument("--nonce", help="the nonce (hex) the reply must answer")
    parser.add_argument("--backend", help="which backend of the platform's answer to verify")
    parser.add_argument("--measurement", action="append", help="an accepted measurement/MRTD")
    parser.add_argument("--vcek", help="SNP: VCEK/VLEK certificate, if the reply has none")
    parser.add_argument("--chain", help="SNP: ASK then ARK, PEM, if the reply has none")
    parser.add_argument("--collateral", help="TDX: collateral JSON, if the reply has none")
    parser.add_argument("--allow-debug", action="store_true")
    parser.add_argument("--now", help="verify as of this ISO time instead of the clock")
    args = parser.parse_args()
    if args.url:
        args.nonce = args.nonce or secrets.token_hex(32)
        body = {"nonce": args.nonce, **({"backend": args.backend} if args.backend else {})}
        request = urllib.request.Request(  # noqa: S310 - the user chooses the URL
            args.url,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - as above
            reply = json.load(response)
    else:
        reply = json.loads(Path(args.file).read_text(encoding="utf-8"))
    if "data" in reply:
        # The platform's answer lists one item per backend serving the domain.
        items = [i for i in reply["data"] if args.backend in (None, i.get("backend"))]
        if not items:
            sys.exit(
                "FAIL: no backend in the reply" + (f" named {args.backend}" if args.backend else "")
            )
        reply = items[0]
        print(f"backend {reply.get('backend')}")
    args.reply = reply.get("attestation") or reply
    if args.nonce and args.reply["nonce"].lower() != args.nonce.lower():
        sys.exit("FAIL: the reply answers another nonce")
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    evidence = base64.b64decode(args.reply.get("evidence") or "")
    auxblob = base64.b64decode(args.reply.get("auxblob") or "")
    provider = args.reply["provider"]
    if provider == "sev-snp":
        errors = verify_snp(evidence, auxblob, args, now)
    elif provider == "tdx":
        errors = verify_tdx(evidence, auxblob, args, now)
    else:
        errors = [f"provider {provider!r} is not confidential: there is nothing to verify"]
    for error in errors:
        print(f"FAIL: {error}")
    print("FAIL" if errors else f"OK: {provider} evidence verified")
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:
        # Any malformed input is a failure to verify, said plainly rather than as a traceback.
        sys.exit(f"FAIL: {type(exc).__name__}: {exc}")
