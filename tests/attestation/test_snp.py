"""SEV-SNP verification against genuine AMD reports, certificates and pinned roots."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from inference.attestation import (
    Evidence,
    FailureCode,
    SnpPolicy,
    SnpReport,
    SnpVerifier,
    TeeType,
    vcek_cache_key,
    verify_evidence,
)

from .conftest import (
    GENOA_MEASUREMENT,
    MILAN_DEBUG_MEASUREMENT,
    MILAN_MEASUREMENT,
    NOW,
    SNP_CASES,
    read,
    snp_evidence,
)


def codes(result) -> set[str]:
    return {failure.code for failure in result.failures}


@pytest.mark.parametrize("case", sorted(SNP_CASES))
def test_it_verifies_every_genuine_report(case):
    _, _, measurement = SNP_CASES[case]
    policy = {
        "measurements": [measurement],
        "min_tcb": "any",
        "allow_debug": case == "milan_debug",
        "allowed_vmpls": [1] if case == "milan_vlek" else [0],
    }

    result = verify_evidence(TeeType.SEV_SNP, snp_evidence(case), policy, now=NOW)

    assert result.ok, result.reasons
    assert result.failures == []
    assert result.claims["measurement"] == measurement
    assert len(result.cert_chain) == 3
    assert all(pem.startswith("-----BEGIN CERTIFICATE-----") for pem in result.cert_chain)
    json.dumps(result.to_dict())


def test_it_reports_the_documented_claims_of_the_milan_debug_report():
    claims = verify_evidence(
        TeeType.SEV_SNP,
        snp_evidence("milan_debug"),
        {"measurements": [MILAN_DEBUG_MEASUREMENT], "min_tcb": "any", "allow_debug": True},
        now=NOW,
    ).claims

    assert claims["version"] == 2
    assert claims["product"] == "Milan"
    assert claims["signing_key"] == "vcek"
    assert claims["vmpl"] == 0
    assert claims["policy"]["raw"] == "00000000000b0000"
    assert claims["policy"]["debug"] is True
    assert claims["report_data"] == "0102030405" + "00" * 59
    assert claims["reported_tcb"] == {
        "raw": "4405000000000002",
        "bootloader": 2,
        "tee": 0,
        "snp": 5,
        "microcode": 68,
    }
    assert claims["current_version"] == "1.49.3"
    assert claims["chip_id"].startswith("3ac3fe21e13fb099")
    assert claims["cpuid"] is None


def test_it_reads_the_version_3_fields_of_the_genoa_report():
    claims = verify_evidence(
        TeeType.SEV_SNP,
        snp_evidence("genoa"),
        {"measurements": [GENOA_MEASUREMENT], "min_tcb": "any"},
        now=NOW,
    ).claims

    assert claims["version"] == 3
    assert claims["product"] == "Genoa"
    assert claims["cpuid"] == {"family": 0x19, "model": 0x11, "stepping": 0x1, "product": "Genoa"}
    assert claims["guest_svn"] == 65547
    assert claims["policy"]["abi_minor"] == 31
    assert claims["current_version"] == "1.55.40"


def test_it_reads_the_vlek_reports_differing_tcbs():
    report = SnpReport.parse(read("snp/milan_vlek_report.bin"))

    assert report.signing_key == "vlek"
    assert report.vmpl == 1
    assert report.reported_tcb.microcode == 217
    assert report.current_tcb.microcode == 220
    assert report.committed_tcb.microcode == 219
    assert report.chip_id == bytes(64)


def test_it_rejects_the_tampered_report_on_its_signature(milan_policy):
    evidence = snp_evidence("milan", report=read("snp/milan_report_TAMPERED_measurement.bin"))

    result = verify_evidence(TeeType.SEV_SNP, evidence, milan_policy, now=NOW)

    assert not result.ok
    assert FailureCode.SIGNATURE_INVALID in codes(result)


def test_it_rejects_a_debug_guest_under_a_policy_that_forbids_debug():
    result = verify_evidence(
        TeeType.SEV_SNP,
        snp_evidence("milan_debug"),
        {"measurements": [MILAN_DEBUG_MEASUREMENT], "min_tcb": "any"},
        now=NOW,
    )

    assert not result.ok
    assert codes(result) == {FailureCode.DEBUG_ENABLED}


def test_it_rejects_an_unexpected_measurement():
    result = verify_evidence(
        TeeType.SEV_SNP,
        snp_evidence("milan"),
        {"measurements": ["ab" * 48], "min_tcb": "any"},
        now=NOW,
    )

    assert not result.ok
    assert codes(result) == {FailureCode.MEASUREMENT_MISMATCH}


def test_it_accepts_any_of_several_allowed_measurements():
    policy = {"measurements": ["ab" * 48, MILAN_MEASUREMENT.upper()], "min_tcb": "any"}

    assert verify_evidence(TeeType.SEV_SNP, snp_evidence("milan"), policy, now=NOW).ok


@pytest.mark.parametrize(
    ("min_tcb", "ok"),
    [
        ({"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}, True),
        ({"bootloader": 1, "tee": "any", "snp": 1, "microcode": 100}, True),
        ({"bootloader": 3, "tee": 0, "snp": 9, "microcode": 115}, False),
        ({"bootloader": "any", "tee": "any", "snp": "any", "microcode": 116}, False),
        ({"bootloader": 0, "tee": 1, "snp": 0, "microcode": 0}, False),
    ],
)
def test_it_enforces_the_minimum_tcb(min_tcb, ok):
    policy = {"measurements": [MILAN_MEASUREMENT], "min_tcb": {"Milan": min_tcb}}

    result = verify_evidence(TeeType.SEV_SNP, snp_evidence("milan"), policy, now=NOW)

    assert result.ok is ok
    if not ok:
        assert codes(result) == {FailureCode.TCB_TOO_LOW}


def test_it_rejects_a_vcek_from_another_chip(milan_policy):
    evidence = snp_evidence("milan", cert_file="milan_debug_vcek.der")

    result = verify_evidence(TeeType.SEV_SNP, evidence, milan_policy, now=NOW)

    assert not result.ok
    assert {FailureCode.SIGNATURE_INVALID, FailureCode.CHIP_ID_MISMATCH} <= codes(result)


def test_it_rejects_a_vlek_report_at_vmpl_1_under_the_default_policy():
    result = verify_evidence(
        TeeType.SEV_SNP,
        snp_evidence("milan_vlek"),
        {"measurements": [SNP_CASES["milan_vlek"][2]], "min_tcb": "any"},
        now=NOW,
    )

    assert codes(result) == {FailureCode.VMPL_NOT_ALLOWED}


def test_it_rejects_a_vlek_when_the_policy_trusts_only_vceks():
    policy = {
        "measurements": [SNP_CASES["milan_vlek"][2]],
        "min_tcb": "any",
        "allowed_vmpls": [1],
        "signing_keys": ["vcek"],
    }

    result = verify_evidence(TeeType.SEV_SNP, snp_evidence("milan_vlek"), policy, now=NOW)

    assert codes(result) == {FailureCode.SIGNING_KEY_NOT_ALLOWED}


def test_it_rejects_the_vlek_after_it_expired():
    policy = {
        "measurements": [SNP_CASES["milan_vlek"][2]],
        "min_tcb": "any",
        "allowed_vmpls": [1],
    }
    after_expiry = NOW.replace(year=2026)

    result = verify_evidence(TeeType.SEV_SNP, snp_evidence("milan_vlek"), policy, now=after_expiry)

    assert codes(result) == {FailureCode.CERTIFICATE_NOT_VALID_NOW}


def test_it_rejects_a_vcek_before_it_was_issued(milan_policy):
    before_issue = NOW.replace(year=2023, month=1)

    result = verify_evidence(TeeType.SEV_SNP, snp_evidence("milan"), milan_policy, now=before_issue)

    assert codes(result) == {FailureCode.CERTIFICATE_NOT_VALID_NOW}


def test_it_checks_host_data_and_report_data(milan_policy):
    report_data = read("snp/milan_report.bin")[0x50:0x90].hex()
    good = {**milan_policy, "host_data": "00" * 32, "report_data": report_data}
    bad = {**milan_policy, "host_data": "01" * 32, "report_data": "00" * 64}

    assert verify_evidence(TeeType.SEV_SNP, snp_evidence("milan"), good, now=NOW).ok
    result = verify_evidence(TeeType.SEV_SNP, snp_evidence("milan"), bad, now=NOW)
    assert codes(result) == {FailureCode.HOST_DATA_MISMATCH, FailureCode.REPORT_DATA_MISMATCH}


def test_it_rejects_a_vcek_signed_by_another_product_line(milan_policy):
    evidence = snp_evidence("milan", cert_file="genoa_vcek.pem")

    result = verify_evidence(TeeType.SEV_SNP, evidence, milan_policy, now=NOW)

    assert not result.ok
    assert FailureCode.SIGNATURE_INVALID in codes(result)


def test_it_ignores_the_chain_the_guest_sends_and_uses_the_pinned_one(milan_policy):
    from .conftest import snp_auxblob

    evidence = Evidence(
        TeeType.SEV_SNP,
        read("snp/milan_report.bin"),
        snp_auxblob("milan_vcek.der", with_chain=True),
    )

    result = verify_evidence(TeeType.SEV_SNP, evidence, milan_policy, now=NOW)

    assert result.ok, result.reasons


def test_it_fails_when_no_vcek_is_available(milan_policy):
    evidence = Evidence(TeeType.SEV_SNP, read("snp/milan_report.bin"))

    result = verify_evidence(TeeType.SEV_SNP, evidence, milan_policy, now=NOW)

    assert codes(result) == {FailureCode.CERTIFICATE_MISSING}
    assert result.claims["measurement"] == MILAN_MEASUREMENT


def test_it_finds_the_vcek_in_an_operator_cache_directory(tmp_path, milan_policy):
    report = SnpReport.parse(read("snp/milan_report.bin"))
    key = vcek_cache_key(report.chip_id, report.reported_tcb)
    (tmp_path / f"{key}.der").write_bytes(read("snp/milan_vcek.der"))
    evidence = Evidence(TeeType.SEV_SNP, read("snp/milan_report.bin"))

    result = SnpVerifier(vcek_cache=tmp_path).verify(evidence, milan_policy, now=NOW)

    assert result.ok, result.reasons


def test_it_finds_the_vcek_in_an_operator_cache_mapping():
    report = SnpReport.parse(read("snp/genoa_report.bin"))
    cache = {vcek_cache_key(report.chip_id, report.reported_tcb): read("snp/genoa_vcek.pem")}
    verifier = SnpVerifier(vcek_cache=cache)
    evidence = Evidence(TeeType.SEV_SNP, read("snp/genoa_report.bin"))

    result = verifier.verify(
        evidence, SnpPolicy(measurements=[GENOA_MEASUREMENT], min_tcb="any"), now=NOW
    )

    assert result.ok, result.reasons


def test_it_emits_no_warning_for_amds_zero_serial_numbers(milan_policy, recwarn):
    verify_evidence(TeeType.SEV_SNP, snp_evidence("milan"), milan_policy, now=NOW)

    assert [str(w.message) for w in recwarn] == []


def test_a_stored_result_round_trips(milan_policy):
    from inference.attestation import VerificationResult

    result = verify_evidence(
        TeeType.SEV_SNP, snp_evidence("milan"), milan_policy, now=NOW - timedelta(days=1)
    )
    stored = json.loads(json.dumps(result.to_dict()))

    assert VerificationResult.from_dict(stored) == result
