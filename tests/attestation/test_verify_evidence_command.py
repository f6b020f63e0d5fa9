"""`python manage.py verify_evidence`: offline verification of saved evidence, as JSON."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import warnings
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from django.core.management import call_command
from django.core.management.base import CommandError

from .conftest import DATA, GENUINE_SNP, TDX_V4_MRTD, exact_policy, leaf_der, read, snp_auxblob

ROOT = Path(__file__).resolve().parents[2]
AS_OF = "2026-07-01T00:00:00Z"
TDX_AS_OF = "2025-07-01T00:00:00Z"


def run(*args: str | Path) -> tuple[dict, str | None]:
    """The command's JSON and, when it failed, its error."""
    out = StringIO()
    try:
        call_command("verify_evidence", *map(str, args), stdout=out)
    except CommandError as exc:
        return json.loads(out.getvalue()) if out.getvalue() else {}, str(exc)
    return json.loads(out.getvalue()), None


def write(tmp_path: Path, name: str, data: bytes | str | dict) -> Path:
    path = tmp_path / name
    if isinstance(data, dict):
        data = json.dumps(data)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_it_verifies_a_turin_report_with_its_certificate_under_a_policy(tmp_path):
    policy = write(tmp_path, "policy.json", exact_policy("turin_v5"))

    result, error = run(
        "--tee", "sev-snp",
        "--evidence", DATA / GENUINE_SNP["turin_v5"].report,
        "--certificate", DATA / GENUINE_SNP["turin_v5"].certificate,
        "--policy", policy,
        "--now", AS_OF,
    )  # fmt: skip

    assert error is None, result["failures"]
    assert result["ok"] is True
    assert result["tee"] == "sev-snp"
    assert result["now"] == "2026-07-01T00:00:00+00:00"
    assert result["claims"]["product"] == "Turin"
    assert result["claims"]["reported_tcb"]["fmc"] == 1
    assert result["policy"]["min_tcb"]["Turin"]["microcode"] == 81
    open_fields = {f["field"] for f in result["policy_fields"] if not f["pinned"]}
    assert "host_data" in open_fields and "measurements" not in open_fields
    assert len(result["cert_chain"]) == 3


def test_it_exits_non_zero_with_the_failure_codes_of_a_tampered_report(tmp_path):
    report = bytearray(read(GENUINE_SNP["genoa_v5"].report))
    report[0x90] ^= 1
    evidence = write(tmp_path, "report.bin", bytes(report))

    result, error = run(
        "--tee", "sev-snp", "--evidence", evidence,
        "--chain", DATA / GENUINE_SNP["genoa_v5"].certificate, "--now", AS_OF,
    )  # fmt: skip

    assert result["ok"] is False
    assert [f["code"] for f in result["failures"]] == ["signature_invalid"]
    assert error == "verification failed: signature_invalid"


def test_a_kds_bundle_with_the_vcek_is_enough_and_the_policy_is_optional():
    result, error = run(
        "--tee", "sev-snp",
        "--evidence", DATA / GENUINE_SNP["genoa_v5"].report,
        "--chain", DATA / GENUINE_SNP["genoa_v5"].certificate,
        "--now", AS_OF,
    )  # fmt: skip

    assert error is None, result["failures"]
    assert result["policy"] is None and result["policy_fields"] is None


def test_without_a_policy_only_authenticity_is_judged(tmp_path):
    # A genuine debug guest is authentic; a policy that forbids debug refuses it.
    args = ["--tee", "sev-snp", "--evidence", DATA / "snp/milan_debug_report.bin"]
    args += ["--certificate", DATA / "snp/milan_debug_vcek.der", "--now", "2025-07-01T00:00:00Z"]
    policy = write(
        tmp_path,
        "p.json",
        {"measurements": [GENUINE_SNP["milan_v2"].measurement], "min_tcb": "any"},
    )

    genuine, _ = run(*args)
    judged, error = run(*args, "--policy", policy)

    assert genuine["ok"] is True
    assert {f["code"] for f in judged["failures"]} == {"debug_enabled", "measurement_mismatch"}
    assert error is not None


def test_a_chain_with_a_certificate_that_is_not_amds_is_reported(tmp_path):
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SEV-Genoa")])
    fake = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(GENUINE_SNP["genoa_v5"].now.replace(year=2020))
        .not_valid_after(GENUINE_SNP["genoa_v5"].now.replace(year=2040))
        .sign(key, hashes.SHA384())
    )
    bundle = write(
        tmp_path,
        "chain.pem",
        read(GENUINE_SNP["genoa_v5"].certificate) + fake.public_bytes(Encoding.PEM),
    )

    result, error = run(
        "--tee", "sev-snp", "--evidence", DATA / GENUINE_SNP["genoa_v5"].report,
        "--chain", bundle, "--now", AS_OF,
    )  # fmt: skip

    assert [f["code"] for f in result["failures"]] == ["root_not_trusted"]
    assert "not a pinned AMD certificate" in result["failures"][0]["message"]
    assert error == "verification failed: root_not_trusted"


def test_the_snp_collateral_is_amds_crl_and_its_window_is_checked():
    args = ["--tee", "sev-snp", "--evidence", DATA / GENUINE_SNP["milan_v5"].report]
    args += ["--certificate", DATA / GENUINE_SNP["milan_v5"].certificate]
    args += ["--collateral", DATA / "snp-v5/milan_crl.der"]

    current, _ = run(*args, "--now", AS_OF)
    stale, error = run(*args, "--now", "2026-09-01T00:00:00Z")

    assert current["ok"] is True and current["claims"]["crl"]["checked"] is True
    assert [f["code"] for f in stale["failures"]] == ["collateral_not_valid_now"]
    assert error is not None


def test_the_tdx_collateral_window_is_checked(tmp_path):
    args = ["--tee", "tdx", "--evidence", DATA / "tdx/tdx_quote_v4.bin"]
    args += ["--collateral", DATA / "tdx/tdx_quote_v4_collateral.json"]
    policy = write(tmp_path, "p.json", {"mrtds": [TDX_V4_MRTD]})

    good, error = run(*args, "--policy", policy, "--now", TDX_AS_OF)
    late, late_error = run(*args, "--now", "2026-01-01T00:00:00Z")

    assert error is None and good["ok"] is True
    assert good["claims"]["tcb_status"] == "UpToDate"
    assert [f["code"] for f in late["failures"]] == ["collateral_not_valid_now"]
    assert late_error is not None


def test_it_reads_a_saved_reply_or_record_as_json_and_a_report_as_hex(tmp_path):
    vector = GENUINE_SNP["turin_v5_fw158"]
    reply = {
        "provider": "sev-snp",
        "confidential": True,
        "nonce": "00" * 32,
        "report_data": read(vector.report)[0x50:0x90].hex(),
        "tls_public_key": None,
        "evidence": base64.b64encode(read(vector.report)).decode(),
        "auxblob": None,
        "generated_at": "2026-07-01T00:00:00+00:00",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        leaf = x509.load_der_x509_certificate(leaf_der(vector.certificate))
    record = {
        "attestation": reply,
        "verification": {"cert_chain": [leaf.public_bytes(Encoding.PEM).decode()]},
    }
    hex_report = write(tmp_path, "report.hex", read(vector.report).hex())

    from_record, _ = run(
        "--tee", "sev-snp", "--evidence", write(tmp_path, "r.json", record), "--now", AS_OF
    )
    from_hex, _ = run(
        "--tee", "sev-snp", "--evidence", hex_report,
        "--certificate", DATA / vector.certificate, "--now", AS_OF,
    )  # fmt: skip

    assert from_record["ok"] is True, from_record["failures"]
    assert from_hex["ok"] is True, from_hex["failures"]


def test_an_invalid_policy_is_reported_as_json(tmp_path):
    policy = write(tmp_path, "p.json", {"measurements": ["ab" * 48]})

    result, _ = run(
        "--tee", "sev-snp", "--evidence", DATA / GENUINE_SNP["turin_v5"].report,
        "--certificate", DATA / GENUINE_SNP["turin_v5"].certificate,
        "--policy", policy, "--now", AS_OF,
    )  # fmt: skip

    assert [f["code"] for f in result["failures"]] == ["invalid_policy"]
    assert "min_tcb" in result["failures"][0]["message"]


def test_an_exported_policy_file_is_accepted(tmp_path):
    exported = {
        "backend": "b",
        "tee_type": "sev-snp",
        "version": 3,
        "policy": exact_policy("turin_v5"),
    }

    result, error = run(
        "--tee", "sev-snp", "--evidence", DATA / GENUINE_SNP["turin_v5"].report,
        "--certificate", DATA / GENUINE_SNP["turin_v5"].certificate,
        "--policy", write(tmp_path, "export.json", exported), "--now", AS_OF,
    )  # fmt: skip

    assert error is None, result["failures"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--now", "2026-07-01T00:00:00"], "needs a time zone"),
        (["--now", "tomorrow"], "is not an ISO-8601 time"),
        (["--certificate", "/nonexistent/vcek.der"], "cannot read /nonexistent/vcek.der"),
    ],
)
def test_unusable_arguments_are_refused_clearly(args, message):
    _, error = run("--tee", "sev-snp", "--evidence", DATA / GENUINE_SNP["turin_v5"].report, *args)

    assert error is not None and message in error


def test_certificates_do_not_apply_to_tdx():
    _, error = run(
        "--tee", "tdx", "--evidence", DATA / "tdx/tdx_quote_v4.bin",
        "--certificate", DATA / GENUINE_SNP["turin_v5"].certificate,
    )  # fmt: skip

    assert "apply to sev-snp evidence only" in error


def test_the_command_line_exit_status_says_whether_it_verified(tmp_path):
    base = [sys.executable, "manage.py", "verify_evidence", "--tee", "sev-snp", "--now", AS_OF]
    base += ["--certificate", str(DATA / GENUINE_SNP["turin_v5"].certificate)]
    report = bytearray(read(GENUINE_SNP["turin_v5"].report))
    good = subprocess.run(
        [*base, "--evidence", str(DATA / GENUINE_SNP["turin_v5"].report)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    report[0x2A0] ^= 1
    bad = subprocess.run(
        [*base, "--evidence", str(write(tmp_path, "bad.bin", bytes(report)))],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["failures"][0]["code"] == "signature_invalid"
    assert "verification failed: signature_invalid" in bad.stderr


def test_an_auxblob_with_the_chain_still_uses_the_pinned_roots(tmp_path):
    reply = {
        "provider": "sev-snp",
        "confidential": True,
        "nonce": "00" * 32,
        "report_data": "00" * 64,
        "tls_public_key": None,
        "evidence": base64.b64encode(read("snp/milan_report.bin")).decode(),
        "auxblob": base64.b64encode(snp_auxblob("milan_vcek.der", with_chain=True)).decode(),
        "generated_at": "2025-07-01T00:00:00+00:00",
    }

    result, error = run(
        "--tee", "sev-snp", "--evidence", write(tmp_path, "reply.json", reply),
        "--now", "2025-07-01T00:00:00Z",
    )  # fmt: skip

    assert error is None, result["failures"]
