"""Fixtures for the attestation tests: the real evidence in `data/` and its "as of" times.

Everything verifies as of the fixed times in `data/README.md`, never the wall clock,
because certificates and collateral expire.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from inference.attestation import Evidence, TeeType
from inference.attestation.snp import ARK_GUID, ASK_GUID, VCEK_GUID, VLEK_GUID, build_cert_table

DATA = Path(__file__).resolve().parent / "data"

# 2025-07-01T00:00:00Z: inside every positive case's validity window.
NOW = datetime.fromtimestamp(1751328000, UTC)
# 2026-03-01T00:00:00Z: inside the TDX v5 collateral's window.
NOW_V5 = datetime.fromtimestamp(1772323200, UTC)
# 2026-07-01T00:00:00Z: inside every certificate's window of `data/snp-v5/` and the window
# of the genuine Milan CRL (2026-06-22T05:53:52Z .. 2026-08-08T00:00:00Z).
NOW_SNP_V5 = datetime(2026, 7, 1, tzinfo=UTC)

MILAN_DEBUG_MEASUREMENT = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
MILAN_MEASUREMENT = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
GENOA_MEASUREMENT = "f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae"
VLEK_MEASUREMENT = "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0"
TDX_V4_MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
TDX_V5_MRTD = "273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd"

# report file, endorsement certificate file, measurement
SNP_CASES = {
    "milan_debug": ("milan_debug_report.bin", "milan_debug_vcek.der", MILAN_DEBUG_MEASUREMENT),
    "milan": ("milan_report.bin", "milan_vcek.der", MILAN_MEASUREMENT),
    "genoa": ("genoa_report.bin", "genoa_vcek.pem", GENOA_MEASUREMENT),
    "milan_vlek": ("milan_vlek_report.bin", "milan_vlek.der", VLEK_MEASUREMENT),
}


@dataclass(frozen=True)
class SnpVector:
    """A genuine SEV-SNP report, its endorsement certificate and what it should show."""

    report: str
    certificate: str
    product: str
    version: int
    signing_key: str
    now: datetime
    measurement: str
    reported_tcb: dict[str, int]


# Every report version and product line the verifier supports, from genuine hardware
# (sources, licences and validity windows: data/README.md).
GENUINE_SNP = {
    "milan_v2": SnpVector(
        "snp/milan_report.bin",
        "snp/milan_vcek.der",
        "Milan",
        2,
        "vcek",
        NOW,
        MILAN_MEASUREMENT,
        {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
    ),
    "milan_v3_vlek": SnpVector(
        "snp/milan_vlek_report.bin",
        "snp/milan_vlek.der",
        "Milan",
        3,
        "vlek",
        NOW,
        VLEK_MEASUREMENT,
        {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 217},
    ),
    "milan_v3": SnpVector(
        "snp-v5/milan_v3_microsoft_report.bin",
        "snp-v5/milan_v3_microsoft_vcek.pem",
        "Milan",
        3,
        "vcek",
        NOW_SNP_V5,
        "5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f"
        "98189887920ab2fa0096903a0c23fca1",
        {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 219},
    ),
    "milan_v5": SnpVector(
        "snp-v5/milan_v5_gcp_report.bin",
        "snp-v5/milan_v5_gcp_vcek.der",
        "Milan",
        5,
        "vcek",
        NOW_SNP_V5,
        "e1bcdadef92887cb4512c079c485cf009100cf86d2276a27da2b1e9d150dd11b"
        "0b5cc6d4b40bbc9ff0575b63f679dc23",
        {"bootloader": 4, "tee": 0, "snp": 29, "microcode": 222},
    ),
    "genoa_v3": SnpVector(
        "snp/genoa_report.bin",
        "snp/genoa_vcek.pem",
        "Genoa",
        3,
        "vcek",
        NOW,
        GENOA_MEASUREMENT,
        {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 84},
    ),
    "genoa_v5": SnpVector(
        "snp-v5/genoa_v5_yaxitech_report.bin",
        "snp-v5/genoa_v5_yaxitech_vcek_chain.pem",
        "Genoa",
        5,
        "vcek",
        NOW_SNP_V5,
        "bece7399a4da054a63a2e3fa1a47ff98c88e391d4379126fc4e75c677f25b6cd"
        "6bfd8ef609a8638049633ac7e00e4ac1",
        {"bootloader": 10, "tee": 0, "snp": 27, "microcode": 88},
    ),
    "genoa_v5_siena": SnpVector(
        "snp-v5/genoa_v5_lunal_report.bin",
        "snp-v5/genoa_v5_lunal_vcek.der",
        "Genoa",
        5,
        "vcek",
        NOW_SNP_V5,
        "d9912ba396ce409c2947841d93a5076b6839b898c22b4aae05edb3b2b058a999"
        "27f8cf9a4f8617ee695deb14795496c8",
        {"bootloader": 10, "tee": 0, "snp": 27, "microcode": 27},
    ),
    "turin_v5": SnpVector(
        "snp-v5/turin_v5_microsoft_report.bin",
        "snp-v5/turin_v5_microsoft_vcek.pem",
        "Turin",
        5,
        "vcek",
        NOW_SNP_V5,
        "6d6c354511d6f7c6d7504668903dc5bdc066a048b651840d8d03fb85299ebfa1"
        "42fccf1d1b0baca496841bdf243619d4",
        {"fmc": 1, "bootloader": 1, "tee": 1, "snp": 4, "microcode": 81},
    ),
    "turin_v5_fw158": SnpVector(
        "snp-v5/turin_v5_openanolis_report.bin",
        "snp-v5/turin_v5_openanolis_vcek.der",
        "Turin",
        5,
        "vcek",
        NOW_SNP_V5,
        "a13039badd60b0854bea169b58fd6fe1773981aefbfee98bf32d6cbe7521e5f2"
        "81c1dd1fa8a44be828e6cf4804871091",
        {"fmc": 1, "bootloader": 3, "tee": 2, "snp": 5, "microcode": 97},
    ),
}


def leaf_der(name: str) -> bytes:
    """The first certificate of a DER or PEM file (the VCEK of a KDS `vcek` bundle), DER."""
    data = read(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)[0].public_bytes(Encoding.DER)
    return data


def genuine_evidence(name: str, *, report: bytes | None = None) -> Evidence:
    """A genuine vector as the guest's kernel returns it: the report and its certificate."""
    vector = GENUINE_SNP[name]
    guid = VLEK_GUID if vector.signing_key == "vlek" else VCEK_GUID
    return Evidence(
        tee_type=TeeType.SEV_SNP,
        report=report if report is not None else read(vector.report),
        auxblob=build_cert_table({guid: leaf_der(vector.certificate)}),
    )


def exact_policy(name: str, **fields: Any) -> dict[str, Any]:
    """A policy that pins the vector's measurement and its exact TCB, with `fields` on top."""
    vector = GENUINE_SNP[name]
    return {
        "measurements": [vector.measurement],
        "min_tcb": {vector.product: dict(vector.reported_tcb)},
        "allowed_vmpls": [1] if vector.signing_key == "vlek" else [0],
        **fields,
    }


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def ask_ark(name: str) -> tuple[bytes, bytes]:
    """Split a KDS `cert_chain` PEM (intermediate, then ARK) into its two certificates."""
    text = read(f"snp/{name}").decode()
    marker = "-----END CERTIFICATE-----"
    first, second = (part + marker + "\n" for part in text.split(marker)[:2])
    return first.strip().encode(), second.strip().encode()


def snp_auxblob(cert_file: str, *, with_chain: bool = False) -> bytes:
    """A certificate table as the guest's kernel would return it."""
    guid = VLEK_GUID if "vlek" in cert_file else VCEK_GUID
    table: dict[uuid.UUID, bytes] = {guid: read(f"snp/{cert_file}")}
    if with_chain:
        chain_file = "ask_ark_genoa.pem" if "genoa" in cert_file else "ask_ark_milan.pem"
        table[ASK_GUID], table[ARK_GUID] = ask_ark(chain_file)
    return build_cert_table(table)


def snp_evidence(
    case: str, *, report: bytes | None = None, cert_file: str | None = None
) -> Evidence:
    report_file, default_cert, _ = SNP_CASES[case]
    return Evidence(
        tee_type=TeeType.SEV_SNP,
        report=report if report is not None else read(f"snp/{report_file}"),
        auxblob=snp_auxblob(cert_file or default_cert),
    )


def tdx_evidence(version: int = 4, *, quote: bytes | None = None) -> Evidence:
    stem = "tdx_quote_v4" if version == 4 else "tdx_quote_v5_no_tcb_match"
    return Evidence(
        tee_type=TeeType.TDX,
        report=quote if quote is not None else read(f"tdx/{stem}.bin"),
        auxblob=read(f"tdx/{stem}_collateral.json"),
    )


@pytest.fixture
def milan_policy() -> dict:
    return {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any"}


@pytest.fixture
def tdx_policy() -> dict:
    return {"mrtds": [TDX_V4_MRTD]}
