"""The client recipe `scripts/verify_attestation.py`, run as a client would run it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from inference.attestation.offline import verify_offline

from .conftest import (
    DATA,
    GENUINE_SNP,
    MILAN_MEASUREMENT,
    TDX_V4_MRTD,
    exact_policy,
    read,
    snp_auxblob,
)

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


# The offline mode: the same inputs, policies and failure codes as `manage.py verify_evidence`.

REFUSING = {
    "min_guest_svn": 99,
    "allow_smt": False,
    "required_platform_info": ["tsme_enabled"],
    "min_firmware": "9.0",
    "required_current_mitigations": 1 << 40,
}


OFFLINE_CASES = [
    pytest.param(name, fields, tampered, id=f"{name}-{label}")
    for name in sorted(GENUINE_SNP)
    for label, fields, tampered in (
        ("genuine", None, False),
        ("exact-policy", {}, False),
        ("refusing-policy", REFUSING, False),
        ("tampered", {}, True),
    )
]


@pytest.mark.parametrize(("name", "fields", "tampered"), OFFLINE_CASES)
def test_the_offline_mode_agrees_with_the_platforms_verify_evidence(
    name, fields, tampered, tmp_path
):
    vector = GENUINE_SNP[name]
    report = bytearray(read(vector.report))
    if tampered:
        report[0x90] ^= 1
    evidence = tmp_path / "report.bin"
    evidence.write_bytes(bytes(report))
    chain = DATA / f"snp-v5/chains/{vector.product.lower()}_ask_ark_asvk.pem"
    args = ["--tee", "sev-snp", "--evidence", evidence, "--certificate", DATA / vector.certificate]
    args += ["--chain", chain, "--now", vector.now.isoformat()]
    policy_bytes = None
    if fields is not None:
        policy = tmp_path / "policy.json"
        policy.write_text(json.dumps(exact_policy(name, **fields)))
        args += ["--policy", policy]
        policy_bytes = policy.read_bytes()

    script = run(*args)
    platform = verify_offline(
        "sev-snp",
        bytes(report),
        now=vector.now,
        certificate=read(vector.certificate),
        chain=chain.read_bytes(),
        policy=policy_bytes,
    )

    output = json.loads(script.stdout)
    assert script.returncode == (0 if platform["ok"] else 1), script.stdout + script.stderr
    assert output["ok"] is platform["ok"]
    assert sorted(f["code"] for f in output["failures"]) == sorted(
        f["code"] for f in platform["failures"]
    )
    for claim in ("version", "measurement", "product"):
        assert output["claims"][claim] == platform["claims"][claim]
    assert output["claims"]["reported_tcb"] == {
        k: v for k, v in platform["claims"]["reported_tcb"].items() if k != "raw"
    }
    if fields == REFUSING:
        assert not output["ok"]


@pytest.mark.parametrize(
    ("policy", "epoch"),
    [
        (None, "2025-07-01T00:00:00Z"),
        ({"mrtds": [TDX_V4_MRTD]}, "2025-07-01T00:00:00Z"),
        (
            {"mrtds": [TDX_V4_MRTD], "min_tee_tcb_svn": "07" + "00" * 15, "xfam": "00" * 8},
            "2025-07-01T00:00:00Z",
        ),
        ({"mrtds": [TDX_V4_MRTD], "require_sept_ve_disable": False}, "2026-01-01T00:00:00Z"),
    ],
    ids=["genuine", "policy", "refusing-policy", "collateral-expired"],
)
def test_the_offline_mode_agrees_on_tdx(policy, epoch, tmp_path):
    args = ["--tee", "tdx", "--evidence", DATA / "tdx/tdx_quote_v4.bin"]
    args += ["--collateral", DATA / "tdx/tdx_quote_v4_collateral.json", "--now", epoch]
    policy_bytes = None
    if policy is not None:
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(policy))
        args += ["--policy", path]
        policy_bytes = path.read_bytes()

    script = run(*args)
    platform = verify_offline(
        "tdx",
        read("tdx/tdx_quote_v4.bin"),
        now=datetime.fromisoformat(epoch),
        collateral=read("tdx/tdx_quote_v4_collateral.json"),
        policy=policy_bytes,
    )

    output = json.loads(script.stdout)
    assert output["ok"] is platform["ok"]
    assert sorted(f["code"] for f in output["failures"]) == sorted(
        f["code"] for f in platform["failures"]
    )
    assert output["claims"]["mr_td"] == platform["claims"]["mr_td"]


def test_the_offline_mode_refuses_an_invalid_policy_like_the_platform(tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"measurements": [GENUINE_SNP["turin_v5"].measurement]}))

    result = run(
        "--tee", "sev-snp", "--evidence", DATA / GENUINE_SNP["turin_v5"].report,
        "--certificate", DATA / GENUINE_SNP["turin_v5"].certificate, "--policy", policy,
        "--now", "2026-07-01T00:00:00Z",
    )  # fmt: skip

    assert result.returncode == 1
    assert [f["code"] for f in json.loads(result.stdout)["failures"]] == ["invalid_policy"]


def test_the_offline_mode_checks_amds_crl(tmp_path):
    vector = GENUINE_SNP["milan_v5"]
    args = ["--tee", "sev-snp", "--evidence", DATA / vector.report]
    args += [
        "--certificate",
        DATA / vector.certificate,
        "--chain",
        DATA / "snp-v5/chains/milan_ask_ark_asvk.pem",
    ]
    args += ["--collateral", DATA / "snp-v5/milan_crl.der"]

    current = run(*args, "--now", "2026-07-01T00:00:00Z")
    stale = run(*args, "--now", "2026-09-01T00:00:00Z")

    assert current.returncode == 0, current.stdout
    assert [f["code"] for f in json.loads(stale.stdout)["failures"]] == ["collateral_not_valid_now"]
