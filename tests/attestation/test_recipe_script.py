"""The client recipe `scripts/verify_attestation.py`, run as a client would run it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from .conftest import MILAN_MEASUREMENT, TDX_V4_MRTD, read, snp_auxblob

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "verify_attestation.py"
AS_OF = "2025-07-01T00:00:00Z"


def save_reply(tmp_path: Path, provider: str, evidence: bytes, auxblob: bytes) -> Path:
    body = 48 + 520 if provider == "tdx" else 0x50
    reply = {
        "provider": provider,
        "confidential": True,
        "nonce": "00" * 32,
        "report_data": evidence[body : body + 64].hex(),
        "tls_public_key": None,
        "evidence": base64.b64encode(evidence).decode(),
        "auxblob": base64.b64encode(auxblob).decode(),
        "generated_at": "2025-07-01T00:00:00+00:00",
    }
    path = tmp_path / "reply.json"
    path.write_text(json.dumps({"attestation": reply}))
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_it_verifies_a_genuine_snp_reply(tmp_path):
    auxblob = snp_auxblob("milan_vcek.der", with_chain=True)
    reply = save_reply(tmp_path, "sev-snp", read("snp/milan_report.bin"), auxblob)

    result = run("--file", reply, "--now", AS_OF, "--measurement", MILAN_MEASUREMENT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: sev-snp evidence verified" in result.stdout
    assert "Warning" not in result.stderr


def test_it_fails_on_the_tampered_snp_report(tmp_path):
    auxblob = snp_auxblob("milan_vcek.der", with_chain=True)
    tampered = read("snp/milan_report_TAMPERED_measurement.bin")
    reply = save_reply(tmp_path, "sev-snp", tampered, auxblob)

    result = run("--file", reply, "--now", AS_OF)

    assert result.returncode == 1
    assert "FAIL: report signature is invalid" in result.stdout


def test_it_fails_on_an_unexpected_measurement_or_a_debug_guest(tmp_path):
    auxblob = snp_auxblob("milan_debug_vcek.der", with_chain=True)
    reply = save_reply(tmp_path, "sev-snp", read("snp/milan_debug_report.bin"), auxblob)

    result = run("--file", reply, "--now", AS_OF, "--measurement", MILAN_MEASUREMENT)

    assert result.returncode == 1
    assert "guest policy allows debugging" in result.stdout
    assert "measurement is not one of --measurement" in result.stdout


def test_it_takes_the_amd_chain_from_a_file_and_checks_its_pins(tmp_path):
    reply = save_reply(
        tmp_path, "sev-snp", read("snp/genoa_report.bin"), snp_auxblob("genoa_vcek.pem")
    )
    chain = tmp_path / "chain.pem"
    chain.write_bytes(read("snp/ask_ark_genoa.pem"))

    assert run("--file", reply, "--now", AS_OF).returncode == 1
    assert run("--file", reply, "--now", AS_OF, "--chain", chain).returncode == 0


def test_it_verifies_a_tdx_reply_and_fails_outside_the_collateral_window(tmp_path):
    quote = read("tdx/tdx_quote_v4.bin")
    reply = save_reply(tmp_path, "tdx", quote, read("tdx/tdx_quote_v4_collateral.json"))

    good = run("--file", reply, "--now", AS_OF, "--measurement", TDX_V4_MRTD)
    late = run("--file", reply, "--now", "2026-01-01T00:00:00Z")

    assert good.returncode == 0, good.stdout + good.stderr
    assert late.returncode == 1
    assert "TCBInfo expired" in late.stdout


def test_it_fails_cleanly_on_garbage(tmp_path):
    reply = save_reply(tmp_path, "sev-snp", b"\x02" + bytes(1183), b"garbage")

    result = run("--file", reply, "--now", AS_OF)

    assert result.returncode == 1
    assert "FAIL" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
