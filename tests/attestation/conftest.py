"""Fixtures for the attestation tests: the real evidence in `data/` and its "as of" times.

Everything verifies as of the fixed times in `data/README.md`, never the wall clock,
because certificates and collateral expire.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inference.attestation import Evidence, TeeType
from inference.attestation.snp import ARK_GUID, ASK_GUID, VCEK_GUID, VLEK_GUID, build_cert_table

DATA = Path(__file__).resolve().parent / "data"

# 2025-07-01T00:00:00Z: inside every positive case's validity window.
NOW = datetime.fromtimestamp(1751328000, UTC)
# 2026-03-01T00:00:00Z: inside the TDX v5 collateral's window.
NOW_V5 = datetime.fromtimestamp(1772323200, UTC)

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
