#!/usr/bin/env python3
"""Verify a Cube AI backend's attestation yourself, without trusting the platform.

Fetch fresh evidence (the platform forwards your nonce to the backend's agent), read a
saved reply, or verify saved evidence offline:

    python verify_attestation.py --url https://cube.example/proxy/<domain-id>/attestation \
        --token "$CUBE_PAT" --measurement <hex>
    python verify_attestation.py --file reply.json --measurement <hex> --now 2025-07-01T00:00:00Z
    python verify_attestation.py --tee sev-snp|tdx --evidence FILE [--certificate FILE] \
        [--chain FILE] [--collateral FILE] [--policy FILE] [--now ISO-8601]

The offline mode is the platform's `python manage.py verify_evidence`, for clients: the
same inputs, the same policy documents, the same failure codes, and the result as JSON
(`ok`, `failures`, `claims`); exit status 0 means verified.

SEV-SNP (report versions 2, 3 and 5; Milan, Genoa and Turin; VCEK or VLEK): the report's
ECDSA P-384 signature by the VCEK/VLEK, the chain to AMD's ASK/ASVK and ARK (RSA-PSS),
which must be the ones pinned by SHA-256 below, the product line three ways (chain,
certificate, CPUID), the certificate's TCB and hwID against the report, and an AMD CRL if
you give one. TDX: dcap-qvl checks the quote against Intel's root and the collateral.
Then the policy: `--policy` (the platform's policy JSON) or, in the reply modes, the
`--measurement`/`--allow-debug` flags (debug refused, TDX status UpToDate). In the reply
modes REPORT_DATA must also equal SHA-512(nonce || TLS public key DER) when the reply
carries a key. Needs only `cryptography` and `dcap-qvl`.
"""

import argparse
import base64
import binascii
import hashlib
import json
import re
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

# SHA-256 of the DER of AMD's ARKs, ASKs and ASVKs (as published at kdsintf.amd.com).
PINNED_AMD = {
    "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd": "ARK-Milan",
    "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b": "SEV-Milan",
    "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5": "SEV-VLEK-Milan",
    "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1": "ARK-Genoa",
    "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521": "SEV-Genoa",
    "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372": "SEV-VLEK-Genoa",
    "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a": "ARK-Turin",
    "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185": "SEV-Turin",
    "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c": "SEV-VLEK-Turin",
}
PRODUCTS = ("Milan", "Genoa", "Turin")
GUIDS = {  # extended-report certificate table entries
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}
AMD_OID = "1.3.6.1.4.1.3704.1."
SPL_OIDS = {"fmc": "3.9", "bootloader": "3.1", "tee": "3.2", "snp": "3.3", "microcode": "3.8"}
POLICY_BITS = {"smt": 16, "migrate_ma": 18, "debug": 19, "single_socket": 20, "cxl_allow": 21}
POLICY_BITS.update(mem_aes_256_xts=22, rapl_dis=23, ciphertext_hiding_dram=24)
POLICY_BITS.update(page_swap_disable=25)
PLATFORM_BITS = {"smt_enabled": 0, "tsme_enabled": 1, "ecc_enabled": 2, "rapl_disabled": 3}
PLATFORM_BITS.update(ciphertext_hiding_dram_enabled=4, alias_check_complete=5, tio_enabled=7)
SNP_DEFAULTS = {
    "min_firmware": None,
    "min_abi": None,
    "allowed_vmpls": [0],
    "signing_keys": ["vcek", "vlek"],
    "allow_debug": False,
    "allow_migration_agent": False,
    "allow_smt": True,
    "require_single_socket": False,
    "allow_cxl": False,
    "require_ciphertext_hiding": False,
    "required_platform_info": [],
    "id_key_digests": None,
    "author_key_digests": None,
    "min_guest_svn": 0,
    "host_data": None,
    "family_id": None,
    "image_id": None,
    "required_launch_mitigations": None,
    "required_current_mitigations": None,
    "require_crl": False,
    "report_data": None,
}
TDX_DEFAULTS = {
    **dict.fromkeys(("rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner")),
    **dict.fromkeys(("mrownerconfig", "xfam", "td_attributes", "min_tee_tcb_svn")),
    "require_sept_ve_disable": True,
    "allow_debug": False,
    "accepted_tcb_statuses": ["UpToDate"],
    "accepted_advisories": [],
    "report_data": None,
}
TD_FIELDS = {
    "tee_tcb_svn": (0, 16),
    "mr_seam": (16, 48),
    "td_attributes": (120, 8),
    "xfam": (128, 8),
    "mr_td": (136, 48),
    "mr_config_id": (184, 48),
    "mr_owner": (232, 48),
    "mr_owner_config": (280, 48),
    "rtmr0": (328, 48),
    "rtmr1": (376, 48),
    "rtmr2": (424, 48),
    "rtmr3": (472, 48),
    "report_data": (520, 64),
}


class Invalid(Exception):
    """Input that is not evidence, a certificate or a policy at all."""


class Result:
    """Failures (code, message) and claims, as the platform reports them."""

    def __init__(self):
        self.failures = []
        self.claims = {}

    def fail(self, code, message):
        self.failures.append({"code": code, "message": message})

    def codes(self):
        return {failure["code"] for failure in self.failures}


# Certificates ------------------------------------------------------------------------------


def load_certs(data):
    # AMD endorsement keys have serial number 0, which cryptography warns about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]


def cn(cert):
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def fingerprint(cert):
    return cert.fingerprint(hashes.SHA256()).hex()


def cert_table(blob):
    certs, pos = {}, 0
    while pos + 24 <= len(blob):
        guid, offset, length = struct.unpack_from("<16sII", blob, pos)
        pos += 24
        if guid == bytes(16):
            return certs
        name = GUIDS.get(uuid.UUID(bytes=guid))
        if name and offset + length <= len(blob):
            certs[name] = load_certs(blob[offset : offset + length])[0]
    raise Invalid("malformed certificate table")


def extension(cert, suffix):
    try:
        oid = x509.ObjectIdentifier(AMD_OID + suffix)
        return cert.extensions.get_extension_for_oid(oid).value.value
    except x509.ExtensionNotFound:
        return None


def extension_int(cert, suffix):
    value = extension(cert, suffix)
    if not value or len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2:
        return None
    return int.from_bytes(value[2:], "big")


def extension_text(cert, suffix):
    value = extension(cert, suffix)
    if not value or len(value) < 2 or value[0] != 0x16:
        return None
    return value[2:].decode("ascii", errors="replace")


# SEV-SNP -----------------------------------------------------------------------------------


def product_of_cpuid(family, model):
    if family == 0x19 and model < 0x10:
        return "Milan"
    if family == 0x19 and (0x10 <= model < 0x20 or 0xA0 <= model < 0xB0):
        return "Genoa"
    if family == 0x1A and model < 0x20:
        return "Turin"
    return None


def tcb_of(raw, turin):
    b = raw.to_bytes(8, "little")
    if turin:
        return {"fmc": b[0], "bootloader": b[1], "tee": b[2], "snp": b[3], "microcode": b[7]}
    return {"bootloader": b[0], "tee": b[1], "snp": b[6], "microcode": b[7]}


def parse_report(r, result):
    """The report's fields, or None with a failure for a report we cannot read."""
    if len(r) != 1184:
        result.fail("malformed_evidence", f"SNP report must be 1184 bytes, got {len(r)}")
        return None
    u32 = lambda o: int.from_bytes(r[o : o + 4], "little")  # noqa: E731
    u64 = lambda o: int.from_bytes(r[o : o + 8], "little")  # noqa: E731
    version = u32(0)
    if version not in (2, 3, 5):
        result.fail("unsupported_version", f"SNP report version {version} is not supported")
        return None
    if u32(0x34) != 1:
        result.fail("unsupported_version", "SNP signature algorithm is not ECDSA P-384")
        return None
    key = {0: "vcek", 1: "vlek"}.get(u32(0x48) >> 2 & 7)
    if key is None:
        result.fail("malformed_evidence", "SNP report SIGNING_KEY is not VCEK or VLEK")
        return None
    product = None
    if version >= 3:
        product = product_of_cpuid(r[0x188], r[0x189])
        if product is None:
            result.fail("unknown_product", f"CPUID family {r[0x188]:#x} is no known product")
            return None
    turin = product == "Turin"
    report = {
        "version": version,
        "guest_svn": u32(0x04),
        "policy": u64(0x08),
        "family_id": r[0x10:0x20].hex(),
        "image_id": r[0x20:0x30].hex(),
        "vmpl": u32(0x30),
        "platform_info": u64(0x40),
        "signing_key": key,
        "report_data": r[0x50:0x90].hex(),
        "measurement": r[0x90:0xC0].hex(),
        "host_data": r[0xC0:0xE0].hex(),
        "id_key_digest": r[0xE0:0x110].hex(),
        "author_key_digest": r[0x110:0x140].hex(),
        "reported_tcb": tcb_of(u64(0x180), turin),
        "product": product,
        "chip_id": r[0x1A0:0x1E0],
        "current_firmware": (r[0x1EA], r[0x1E9], r[0x1E8]),
        "committed_firmware": (r[0x1EE], r[0x1ED], r[0x1EC]),
        "launch_mit_vector": u64(0x1F8) if version >= 5 else None,
        "current_mit_vector": u64(0x200) if version >= 5 else None,
    }
    result.claims.update(
        {key: value for key, value in report.items() if key not in ("chip_id", "policy")},
        chip_id=report["chip_id"].hex(),
        policy=f"{report['policy']:016x}",
        platform_info=f"{report['platform_info']:016x}",
        current_version=".".join(map(str, report["current_firmware"])),
    )
    return report


def verify_snp(raw, pool, crl, now, result, require_crl):
    """Authenticity of a report; `pool` holds the candidate certificates by role."""
    report = parse_report(raw, result)
    if report is None:
        return None
    key = report["signing_key"]
    leaf = pool.get(key)
    if leaf is None:
        result.fail("certificate_missing", f"need the {key.upper()} (--certificate, --chain)")
        return report
    issuer = leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    product = issuer.removeprefix("SEV-").removeprefix("VLEK-")
    intermediate = next((c for c in pool["others"] if cn(c) == issuer), None)
    ark = next((c for c in pool["others"] if cn(c) == f"ARK-{product}"), None)
    if product not in PRODUCTS or intermediate is None or ark is None:
        result.fail("root_not_trusted", f"need AMD's {issuer} and ARK-{product} (--chain)")
        return report
    result.claims["product"] = product
    for cert in pool["others"]:
        if fingerprint(cert) not in PINNED_AMD:
            result.fail("root_not_trusted", f"{cn(cert)} is not a pinned AMD certificate")
    if ("VLEK" in issuer) != (key == "vlek"):
        result.fail("chain_invalid", f"a {key.upper()} report with a certificate from {issuer}")
    for child, parent in ((ark, ark), (intermediate, ark), (leaf, intermediate)):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:
            result.fail("chain_invalid", f"{cn(child)} is not signed by {cn(parent)}")
    for cert in (leaf, intermediate, ark):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            result.fail("certificate_not_valid_now", f"{cn(cert)} is not valid at {now}")
    name = extension_text(leaf, "2")
    if name is None or name.split("-")[0] != product:
        result.fail("product_mismatch", f"the certificate's productName is {name!r}")
    if report["product"] not in (None, product):
        result.fail("product_mismatch", f"the CPUID is a {report['product']}, not {product}")
    if report["product"] is None and product == "Turin":
        result.fail("product_mismatch", "a report without CPUID cannot come from Turin")
    r, s = (int.from_bytes(raw[o : o + 72], "little") for o in (0x2A0, 0x2E8))
    try:
        leaf.public_key().verify(encode_dss_signature(r, s), raw[:0x2A0], ec.ECDSA(hashes.SHA384()))
    except Exception:
        result.fail("signature_invalid", "report signature is invalid")
    certified = {name: extension_int(leaf, oid) for name, oid in SPL_OIDS.items()}
    if "fmc" not in report["reported_tcb"] and certified["fmc"] is None:
        del certified["fmc"]
    if certified != report["reported_tcb"]:
        result.fail("certificate_tcb_mismatch", "certificate TCB differs from REPORTED_TCB")
    if key == "vcek":
        hwid, chip = extension(leaf, "4"), report["chip_id"]
        if product == "Turin":
            ok = hwid is not None and len(hwid) == 8 and chip[:8] == hwid and not any(chip[8:])
        else:
            ok = hwid == chip
        if not ok:
            result.fail("chip_id_mismatch", "VCEK is for another chip")
    check_crl(crl, intermediate, ark, product, now, result, require_crl)
    return report


def check_crl(data, intermediate, ark, product, now, result, required):
    if data is None:
        if required:
            result.fail("crl_missing", f"the policy requires a CRL for {product} (--collateral)")
        return
    try:
        if b"-----BEGIN" in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        genuine = crl.issuer == ark.subject and crl.is_signature_valid(ark.public_key())
    except Exception:
        genuine = False
    if not genuine or crl.next_update_utc is None:
        result.fail("crl_invalid", f"the CRL is not issued and signed by ARK-{product}")
        return
    if not crl.last_update_utc <= now <= crl.next_update_utc:
        result.fail("collateral_not_valid_now", f"the CRL is not valid at {now}")
    if crl.get_revoked_certificate_by_serial_number(intermediate.serial_number) is not None:
        result.fail("certificate_revoked", f"AMD revoked {cn(intermediate)}")


def snp_policy_failures(report, product, policy, result):
    p = policy
    fail = result.fail
    bit = lambda name: bool(report["policy"] >> POLICY_BITS[name] & 1)  # noqa: E731
    if report["measurement"] not in p["measurements"]:
        fail("measurement_mismatch", "measurement is not one of --measurement")
    product = product or report["product"]
    minimum = p["min_tcb"].get(product)
    if minimum is None:
        fail("product_not_allowed", f"product line {product} is not in the policy")
    else:
        tcb = report["reported_tcb"]
        low = [n for n, w in minimum.items() if w != "any" and (tcb.get(n) is None or tcb[n] < w)]
        if low:
            fail("tcb_too_low", f"reported TCB too low: {', '.join(low)}")
    if p["min_firmware"]:
        wanted = tuple(int(x) for x in p["min_firmware"].split("."))
        for have in (report["current_firmware"], report["committed_firmware"]):
            if have[: len(wanted)] < wanted:
                fail("firmware_too_old", f"firmware {have} < {p['min_firmware']}")
    abi = (report["policy"] >> 8 & 0xFF, report["policy"] & 0xFF)
    if p["min_abi"] and abi < tuple(int(x) for x in p["min_abi"].split(".")):
        fail("abi_too_old", f"guest policy ABI {abi} < {p['min_abi']}")
    if report["vmpl"] not in p["allowed_vmpls"]:
        fail("vmpl_not_allowed", f"VMPL {report['vmpl']} is not allowed")
    if report["signing_key"] not in p["signing_keys"]:
        fail("signing_key_not_allowed", f"{report['signing_key']} is not allowed")
    if bit("debug") and not p["allow_debug"]:
        fail("debug_enabled", "guest policy allows debugging")
    for name, allowed in (
        ("migrate_ma", p["allow_migration_agent"]),
        ("smt", p["allow_smt"]),
        ("cxl_allow", p["allow_cxl"]),
    ):
        if bit(name) and not allowed:
            fail("guest_policy_not_allowed", f"guest policy sets {name}")
    for name, required in (
        ("single_socket", p["require_single_socket"]),
        ("ciphertext_hiding_dram", p["require_ciphertext_hiding"]),
    ):
        if required and not bit(name):
            fail("guest_policy_not_allowed", f"guest policy lacks {name}")
    missing = [
        n
        for n in p["required_platform_info"]
        if not report["platform_info"] >> PLATFORM_BITS[n] & 1
    ]
    if missing:
        fail("platform_info_missing", f"PLATFORM_INFO lacks {', '.join(missing)}")
    for field, digest, code in (
        ("id_key_digests", "id_key_digest", "id_key_not_allowed"),
        ("author_key_digests", "author_key_digest", "author_key_not_allowed"),
    ):
        if p[field] is not None and report[digest] not in p[field]:
            fail(code, f"{digest.upper()} is not in the policy")
    if report["guest_svn"] < p["min_guest_svn"]:
        fail("guest_svn_too_low", f"GUEST_SVN {report['guest_svn']} is too low")
    for field, code in (
        ("host_data", "host_data_mismatch"),
        ("family_id", "family_id_mismatch"),
        ("image_id", "image_id_mismatch"),
        ("report_data", "report_data_mismatch"),
    ):
        if p[field] is not None and report[field] != p[field]:
            fail(code, f"{field.upper()} differs from the policy")
    for field, vector in (
        ("required_launch_mitigations", report["launch_mit_vector"]),
        ("required_current_mitigations", report["current_mit_vector"]),
    ):
        if p[field] is not None and (vector is None or vector & p[field] != p[field]):
            fail("mitigation_missing", f"the report lacks mitigations {field} asks for")


def snp_policy(document):
    """The policy with its defaults, checked as the platform checks it (`invalid_policy`)."""
    unknown = set(document) - set(SNP_DEFAULTS) - {"measurements", "min_tcb"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    policy = {**SNP_DEFAULTS, **document}
    measurements = policy.get("measurements")
    if not isinstance(measurements, list) or not measurements:
        raise ValueError("measurements: a list of at least one 96-hex-digit measurement")
    policy["measurements"] = [hex_of(m, 48, "measurements") for m in measurements]
    if "min_tcb" not in document:
        raise ValueError('min_tcb is required (per product line, or "any")')
    min_tcb = document["min_tcb"]
    if min_tcb == "any":
        min_tcb = dict.fromkeys(PRODUCTS, "any")
    if not isinstance(min_tcb, dict) or not min_tcb or set(min_tcb) - set(PRODUCTS):
        raise ValueError("min_tcb: name product lines (Milan, Genoa, Turin)")
    policy["min_tcb"] = {}
    for product, levels in min_tcb.items():
        names = ["bootloader", "tee", "snp", "microcode"] + (["fmc"] if product == "Turin" else [])
        if levels == "any":
            levels = dict.fromkeys(names, "any")
        if not isinstance(levels, dict) or set(levels) != set(names):
            raise ValueError(f"min_tcb.{product}: give exactly {names}")
        for name, value in levels.items():
            if value != "any" and (type(value) is not int or not 0 <= value <= 255):
                raise ValueError(f"min_tcb.{product}.{name}: 0..255 or 'any'")
        policy["min_tcb"][product] = levels
    for field, size in (
        ("host_data", 32),
        ("family_id", 16),
        ("image_id", 16),
        ("report_data", 64),
    ):
        if policy[field] is not None:
            policy[field] = hex_of(policy[field], size, field)
    for field in ("id_key_digests", "author_key_digests"):
        if policy[field] is not None:
            policy[field] = [hex_of(d, 48, field) for d in policy[field]]
    if set(policy["required_platform_info"]) - set(PLATFORM_BITS):
        raise ValueError(f"required_platform_info: some of {sorted(PLATFORM_BITS)}")
    return policy


def client_snp_policy(args):
    """The reply modes' policy from flags: any measurement unless given, debug refused."""
    return {
        **SNP_DEFAULTS,
        "measurements": [m.lower() for m in args.measurement] if args.measurement else None,
        "min_tcb": {product: dict.fromkeys(SPL_OIDS, "any") for product in PRODUCTS},
        "allow_debug": args.allow_debug,
        "allowed_vmpls": [0, 1, 2, 3],
        "allow_migration_agent": True,
        "allow_cxl": True,
    }


# TDX ---------------------------------------------------------------------------------------


def verify_tdx(quote, collateral, now, result):
    if len(quote) < 54 or int.from_bytes(quote[4:8], "little") != 0x81:
        result.fail("malformed_evidence", "not a TDX quote")
        return None
    version = int.from_bytes(quote[:2], "little")
    if version not in (4, 5):
        result.fail("unsupported_version", f"TDX quote version {version} is not supported")
        return None
    body = 54 if version == 5 else 48
    td = {name: quote[body + o : body + o + n] for name, (o, n) in TD_FIELDS.items()}
    result.claims.update({name: value.hex() for name, value in td.items()})
    result.claims["measurement"] = td["mr_td"].hex()
    if collateral is None:
        result.fail("collateral_missing", "need the collateral (--collateral)")
        return td
    try:
        parsed = dcap_qvl.QuoteCollateralV3.from_json(collateral.decode("utf-8", "replace"))
        verified = dcap_qvl.verify(quote, parsed, int(now.timestamp()))
    except ValueError as exc:
        message = str(exc)
        lowered = message.lower()
        if "expired" in lowered or "in the future" in lowered:
            code = "collateral_not_valid_now"
        elif "tcb level" in lowered or "revoked" in lowered:
            code = "tcb_status_not_accepted"
        elif "signature" in lowered:
            code = "signature_invalid"
        else:
            code = "quote_invalid"
        result.fail(code, f"quote does not verify: {message}")
        return td
    result.claims["tcb_status"] = verified.status
    result.claims["advisory_ids"] = list(verified.advisory_ids)
    return td


def tdx_policy_failures(td, claims, policy, result):
    p = policy
    fail = result.fail
    if td["mr_td"].hex() not in p["mrtds"]:
        fail("measurement_mismatch", "measurement is not one of --measurement")
    for name, field, code in (
        ("rtmr0", "rtmr0", "rtmr_mismatch"),
        ("rtmr1", "rtmr1", "rtmr_mismatch"),
        ("rtmr2", "rtmr2", "rtmr_mismatch"),
        ("rtmr3", "rtmr3", "rtmr_mismatch"),
        ("mrconfigid", "mr_config_id", "td_identity_mismatch"),
        ("mrowner", "mr_owner", "td_identity_mismatch"),
        ("mrownerconfig", "mr_owner_config", "td_identity_mismatch"),
        ("xfam", "xfam", "xfam_mismatch"),
        ("td_attributes", "td_attributes", "td_attributes_mismatch"),
        ("report_data", "report_data", "report_data_mismatch"),
    ):
        if p[name] is not None and td[field].hex() != p[name]:
            fail(code, f"{name.upper()} differs from the policy")
    attributes = int.from_bytes(td["td_attributes"], "little")
    if p["require_sept_ve_disable"] and not attributes >> 28 & 1:
        fail("td_attributes_mismatch", "TD_ATTRIBUTES lacks SEPT_VE_DISABLE")
    if attributes & 1 and not p["allow_debug"]:
        fail("debug_enabled", "TD has DEBUG set")
    if p["min_tee_tcb_svn"] is not None:
        minimum = bytes.fromhex(p["min_tee_tcb_svn"])
        if any(have < want for have, want in zip(td["tee_tcb_svn"], minimum, strict=True)):
            fail("tee_tcb_svn_too_low", "TEE_TCB_SVN is too low")
    status = claims.get("tcb_status")
    if status is not None and status not in p["accepted_tcb_statuses"]:
        fail("tcb_status_not_accepted", f"TCB status is {status}")
    if p["accepted_advisories"] != "any":
        unaccepted = [
            a for a in claims.get("advisory_ids", []) if a not in p["accepted_advisories"]
        ]
        if unaccepted:
            fail("advisory_not_accepted", f"advisories {unaccepted} are not accepted")


def tdx_policy(document):
    unknown = set(document) - set(TDX_DEFAULTS) - {"mrtds"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    policy = {**TDX_DEFAULTS, **document}
    if not isinstance(policy.get("mrtds"), list) or not policy["mrtds"]:
        raise ValueError("mrtds: a list of at least one 96-hex-digit MRTD")
    policy["mrtds"] = [hex_of(m, 48, "mrtds") for m in policy["mrtds"]]
    for field, size in (("xfam", 8), ("td_attributes", 8), ("min_tee_tcb_svn", 16)):
        if policy[field] is not None:
            policy[field] = hex_of(policy[field], size, field)
    for field in ("rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner", "mrownerconfig"):
        if policy[field] is not None:
            policy[field] = hex_of(policy[field], 48, field)
    if policy["accepted_advisories"] != "any":
        policy["accepted_advisories"] = [a.upper() for a in policy["accepted_advisories"]]
    if policy["td_attributes"] is not None:
        attributes = int.from_bytes(bytes.fromhex(policy["td_attributes"]), "little")
        if attributes & 1 and not policy["allow_debug"]:
            raise ValueError("td_attributes has DEBUG set but allow_debug is false")
        if policy["require_sept_ve_disable"] and not attributes >> 28 & 1:
            raise ValueError("td_attributes lacks SEPT_VE_DISABLE")
    return policy


def client_tdx_policy(args):
    return {
        **TDX_DEFAULTS,
        "mrtds": [m.lower() for m in args.measurement] if args.measurement else None,
        "allow_debug": args.allow_debug,
        "require_sept_ve_disable": False,
        "accepted_advisories": "any",
    }


def hex_of(value, size, field):
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]+", value.strip()):
        raise ValueError(f"{field}: {size} bytes as {2 * size} hex digits")
    value = value.strip()
    if len(value) != 2 * size:
        raise ValueError(f"{field}: {size} bytes as {2 * size} hex digits")
    return value.lower()


# Verifying ---------------------------------------------------------------------------------


def verify(provider, evidence, auxblob, extra_certs, certificate, collateral, policy, now):
    """Authenticity, then the policy (a checked dict; None for authenticity only)."""
    result = Result()
    if provider == "sev-snp":
        pool = {"others": []}
        if auxblob:
            table = cert_table(auxblob)
            pool.update({k: v for k, v in table.items() if k in ("vcek", "vlek")})
            pool["others"] += [v for k, v in table.items() if k in ("ask", "ark")]
        for cert in extra_certs:
            if cn(cert) in ("SEV-VCEK", "SEV-VLEK"):
                pool.setdefault(cn(cert)[4:].lower(), cert)
            else:
                pool["others"].append(cert)
        if certificate is not None:
            cert = load_certs(certificate)[0]
            pool["vlek" if cn(cert) == "SEV-VLEK" else "vcek"] = cert
        require_crl = bool(policy and policy["require_crl"])
        report = verify_snp(evidence, pool, collateral, now, result, require_crl)
        if report is not None and policy is not None:
            if policy["measurements"] is None:
                policy = {**policy, "measurements": [report["measurement"]]}
            snp_policy_failures(report, result.claims.get("product"), policy, result)
    elif provider == "tdx":
        td = verify_tdx(evidence, collateral if collateral is not None else auxblob, now, result)
        if td is not None and policy is not None:
            if policy["mrtds"] is None:
                policy = {**policy, "mrtds": [td["mr_td"].hex()]}
            tdx_policy_failures(td, result.claims, policy, result)
    else:
        result.fail(
            "insecure_not_allowed",
            f"provider {provider!r} is not confidential: there is nothing to verify",
        )
    return result


def read_input(data):
    """Evidence from a file: JSON, raw bytes, hex or base64 text."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None, data
    if text.lstrip().startswith("{"):
        return json.loads(text), None
    compact = re.sub(r"\s+", "", text)
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", compact):
        return None, bytes.fromhex(compact)
    try:
        return None, base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("the evidence file is neither JSON, binary, hex nor base64") from None


def pick_item(reply, backend):
    if "data" in reply:
        # The platform's answer lists one item per backend serving the domain.
        items = [i for i in reply["data"] if backend in (None, i.get("backend"))]
        if not items:
            raise Invalid("no backend in the reply" + (f" named {backend}" if backend else ""))
        print(f"backend {items[0].get('backend')}")
        return items[0]
    return reply


def parse_now(text):
    if not text:
        return datetime.now(UTC)
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise Invalid(f"--now {text!r} needs a time zone (for example Z)")
    return value


def load_policy(path, provider):
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(document, dict) and "policy" in document and "tee_type" in document:
        document = document["policy"]  # an exported policy file
    if not isinstance(document, dict):
        raise ValueError("the policy must be a JSON object")
    return snp_policy(document) if provider == "sev-snp" else tdx_policy(document)


def offline(args):
    """`--tee ... --evidence ...`: the platform's verify_evidence command, for clients."""
    now = parse_now(args.now)
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    document, evidence = read_input(read(args.evidence))
    auxblob, extra = None, []
    if document is not None:
        if "data" in document and len(document["data"]) == 1:
            document = document["data"][0]
        reply = document.get("attestation") or document
        if reply.get("provider") != args.tee:
            raise Invalid(f"the evidence is from {reply.get('provider')!r}, not {args.tee}")
        evidence = base64.b64decode(reply.get("evidence") or "")
        auxblob = base64.b64decode(reply["auxblob"]) if reply.get("auxblob") else None
        chain = document.get("cert_chain") or (document.get("verification") or {}).get("cert_chain")
        extra = load_certs("".join(chain).encode()) if chain else []
    if args.chain:
        extra = load_certs(read(args.chain))
    result = Result()
    policy = None
    if args.policy:
        try:
            policy = load_policy(args.policy, args.tee)
        except (ValueError, TypeError, AttributeError) as exc:
            result.fail("invalid_policy", f"invalid policy: {exc}")
    if not result.failures:
        result = verify(
            args.tee,
            evidence,
            auxblob,
            extra,
            read(args.certificate),
            read(args.collateral),
            policy,
            now,
        )
    output = {
        "tee": args.tee,
        "now": now.isoformat(),
        "ok": not result.failures,
        "failures": result.failures,
        "claims": result.claims,
        "policy": policy,
    }
    print(json.dumps(output, indent=2, sort_keys=True, default=str))
    return 0 if output["ok"] else 1


def from_reply(args):
    """`--url` or `--file`: a reply to a nonce, verified with the binding."""
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
    item = pick_item(reply, args.backend)
    reply = item.get("attestation") or item
    if args.nonce and reply["nonce"].lower() != args.nonce.lower():
        print("FAIL: the reply answers another nonce")
        return 1
    provider = reply["provider"]
    now = parse_now(args.now)
    if args.policy:
        policy = load_policy(args.policy, provider)
    elif provider == "sev-snp":
        policy = client_snp_policy(args)
    else:
        policy = client_tdx_policy(args)
    extra = load_certs(Path(args.chain).read_bytes()) if args.chain else []
    result = verify(
        provider,
        base64.b64decode(reply.get("evidence") or ""),
        base64.b64decode(reply["auxblob"]) if reply.get("auxblob") else None,
        extra,
        Path(args.vcek).read_bytes() if args.vcek else None,
        Path(args.collateral).read_bytes() if args.collateral else None,
        policy,
        now,
    )
    measurement, report_data = result.claims.get("measurement"), result.claims.get("report_data")
    if measurement:
        print(f"measurement {measurement}\nreport_data {report_data}")
    if reply.get("tls_public_key") and report_data:
        key = base64.b64decode(reply["tls_public_key"])
        nonce = bytes.fromhex(args.nonce or reply["nonce"])
        if hashlib.sha512(nonce + key).hexdigest() != report_data:
            result.fail("binding_mismatch", "REPORT_DATA does not bind the nonce and TLS key")
    for failure in result.failures:
        print(f"FAIL: {failure['message']}")
    print("FAIL" if result.failures else f"OK: {provider} evidence verified")
    return 1 if result.failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="the platform's POST /proxy/<domain-id>/attestation URL")
    parser.add_argument("--token", help="your personal access token, for --url")
    parser.add_argument("--file", help="a saved attestation reply (JSON)")
    parser.add_argument("--nonce", help="the nonce (hex) the reply must answer")
    parser.add_argument("--backend", help="which backend of the platform's answer to verify")
    parser.add_argument("--measurement", action="append", help="an accepted measurement/MRTD")
    parser.add_argument("--allow-debug", action="store_true")
    parser.add_argument("--tee", choices=["sev-snp", "tdx"], help="offline: the evidence's TEE")
    parser.add_argument("--evidence", help="offline: the report/quote or a saved reply")
    parser.add_argument("--certificate", "--vcek", dest="vcek", help="SNP: the VCEK or VLEK")
    parser.add_argument("--chain", help="SNP: ASK/ASVK and ARK (PEM), as KDS serves them")
    parser.add_argument("--collateral", help="TDX: collateral JSON; SNP: AMD's CRL")
    parser.add_argument("--policy", help="a policy document (JSON), as the platform stores it")
    parser.add_argument("--now", help="verify as of this ISO-8601 time instead of the clock")
    args = parser.parse_args()
    if args.tee or args.evidence:
        if not (args.tee and args.evidence):
            parser.error("the offline mode needs both --tee and --evidence")
        args.certificate = args.vcek
        return offline(args)
    if not (args.url or args.file):
        parser.error("give --url, --file, or --tee with --evidence")
    return from_reply(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:
        # Any malformed input is a failure to verify, said plainly rather than as a traceback.
        print(f"FAIL: {type(exc).__name__}: {exc}")
        sys.exit(1)
