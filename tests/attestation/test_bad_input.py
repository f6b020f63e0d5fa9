"""Malformed evidence, certificates, collateral and arguments: always a clear failure.

Nothing may raise out of a verifier and nothing malformed may pass.
"""

from __future__ import annotations

import struct
import uuid
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.attestation import Evidence, FailureCode, TeeType, verify_evidence
from inference.attestation.snp import VCEK_GUID, build_cert_table

from .conftest import MILAN_MEASUREMENT, NOW, TDX_V4_MRTD, read, snp_evidence, tdx_evidence

SNP_POLICY = {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any"}
TDX_POLICY = {"mrtds": [TDX_V4_MRTD]}
POLICIES = {TeeType.SEV_SNP: SNP_POLICY, TeeType.TDX: TDX_POLICY}


def codes(result) -> set[str]:
    return {failure.code for failure in result.failures}


def milan_report() -> bytes:
    return read("snp/milan_report.bin")


@pytest.mark.parametrize(
    "report",
    [b"", milan_report()[:-1], milan_report()[:100], milan_report() + b"\0", b"\0" * 4000],
    ids=["empty", "one-short", "truncated", "one-long", "oversized"],
)
def test_it_rejects_a_report_of_the_wrong_size(report):
    result = verify_evidence(
        TeeType.SEV_SNP, snp_evidence("milan", report=report), SNP_POLICY, now=NOW
    )

    assert not result.ok
    assert codes(result) == {FailureCode.MALFORMED_EVIDENCE}
    assert "1184 bytes" in result.failures[0].message


@pytest.mark.parametrize("version", [0, 1, 4, 6, 7, 0xFFFFFFFF])
def test_it_rejects_unknown_report_versions(version):
    report = struct.pack("<I", version) + milan_report()[4:]

    result = verify_evidence(
        TeeType.SEV_SNP, snp_evidence("milan", report=report), SNP_POLICY, now=NOW
    )

    assert codes(result) == {FailureCode.UNSUPPORTED_VERSION}
    assert f"version {version}" in result.failures[0].message


def test_it_rejects_an_unknown_signature_algorithm():
    report = bytearray(milan_report())
    report[0x34] = 2

    result = verify_evidence(
        TeeType.SEV_SNP, snp_evidence("milan", report=bytes(report)), SNP_POLICY, now=NOW
    )

    assert codes(result) == {FailureCode.UNSUPPORTED_VERSION}


@pytest.mark.parametrize(
    "certificate",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\x30\x82",
    ],
    ids=["empty", "garbage", "bad-pem", "truncated-der"],
)
def test_it_rejects_garbage_certificates(certificate):
    auxblob = build_cert_table({VCEK_GUID: certificate})
    evidence = Evidence(TeeType.SEV_SNP, milan_report(), auxblob)

    result = verify_evidence(TeeType.SEV_SNP, evidence, SNP_POLICY, now=NOW)

    assert not result.ok
    assert codes(result) & {FailureCode.CERTIFICATE_INVALID, FailureCode.CERTIFICATE_MISSING}


def test_it_rejects_a_certificate_that_is_not_an_amd_endorsement_key():
    intel_root = read("tdx/intel_sgx_root_ca.der")
    evidence = Evidence(TeeType.SEV_SNP, milan_report(), build_cert_table({VCEK_GUID: intel_root}))

    result = verify_evidence(TeeType.SEV_SNP, evidence, SNP_POLICY, now=NOW)

    assert codes(result) == {FailureCode.ROOT_NOT_TRUSTED}


def test_it_rejects_an_ask_presented_as_the_vcek():
    ask = read("snp/ask_ark_milan.pem")
    evidence = Evidence(TeeType.SEV_SNP, milan_report(), build_cert_table({VCEK_GUID: ask}))

    result = verify_evidence(TeeType.SEV_SNP, evidence, SNP_POLICY, now=NOW)

    assert not result.ok


@pytest.mark.parametrize(
    "auxblob",
    [
        b"\x01" * 23,
        struct.pack("<16sII", VCEK_GUID.bytes, 40, 10**6) + bytes(24),
        struct.pack("<16sII", VCEK_GUID.bytes, 0, 10) + bytes(24),
        struct.pack("<16sII", uuid.uuid4().bytes, 48, 1) * 100,
    ],
    ids=["unterminated", "out-of-range", "overlaps-header", "too-many"],
)
def test_it_rejects_a_malformed_certificate_table(auxblob):
    evidence = Evidence(TeeType.SEV_SNP, milan_report(), auxblob)

    result = verify_evidence(TeeType.SEV_SNP, evidence, SNP_POLICY, now=NOW)

    assert codes(result) == {FailureCode.MALFORMED_EVIDENCE}


@pytest.mark.parametrize(
    "quote",
    [
        b"",
        b"\x04\x00" * 10,
        read("tdx/tdx_quote_v4.bin")[:600],
        read("tdx/tdx_quote_v4.bin")[:2000],
    ],
    ids=["empty", "header-only", "truncated-body", "truncated-signature"],
)
def test_it_rejects_truncated_quotes(quote):
    result = verify_evidence(TeeType.TDX, tdx_evidence(4, quote=quote), TDX_POLICY, now=NOW)

    assert not result.ok
    assert codes(result) & {FailureCode.MALFORMED_EVIDENCE, FailureCode.QUOTE_INVALID}


@pytest.mark.parametrize("version", [3, 6, 0xFFFF])
def test_it_rejects_unknown_quote_versions(version):
    quote = struct.pack("<H", version) + read("tdx/tdx_quote_v4.bin")[2:]

    result = verify_evidence(TeeType.TDX, tdx_evidence(4, quote=quote), TDX_POLICY, now=NOW)

    assert codes(result) == {FailureCode.UNSUPPORTED_VERSION}


def test_it_rejects_an_sgx_quote_as_tdx_evidence():
    quote = bytearray(read("tdx/tdx_quote_v4.bin"))
    quote[4:8] = struct.pack("<I", 0)

    result = verify_evidence(TeeType.TDX, tdx_evidence(4, quote=bytes(quote)), TDX_POLICY, now=NOW)

    assert codes(result) == {FailureCode.MALFORMED_EVIDENCE}


@pytest.mark.parametrize(
    "collateral",
    [b"garbage", b"{}", b'{"tcb_info": 1}', b"\xff\xfe", b"[]"],
    ids=["garbage", "empty-object", "wrong-types", "not-utf8", "array"],
)
def test_it_rejects_garbage_collateral(collateral):
    evidence = Evidence(TeeType.TDX, read("tdx/tdx_quote_v4.bin"), collateral)

    result = verify_evidence(TeeType.TDX, evidence, TDX_POLICY, now=NOW)

    assert not result.ok
    assert FailureCode.COLLATERAL_INVALID in codes(result)


def test_it_rejects_collateral_for_another_platform():
    evidence = Evidence(
        TeeType.TDX,
        read("tdx/tdx_quote_v4.bin"),
        read("tdx/tdx_quote_v5_no_tcb_match_collateral.json"),
    )

    result = verify_evidence(TeeType.TDX, evidence, TDX_POLICY, now=NOW)

    assert not result.ok


def test_it_rejects_a_naive_now():
    result = verify_evidence(
        TeeType.SEV_SNP,
        snp_evidence("milan"),
        SNP_POLICY,
        now=datetime(2025, 7, 1),  # noqa: DTZ001 - naive on purpose: it must be refused
    )

    assert codes(result) == {FailureCode.INVALID_ARGUMENT}


def test_it_rejects_an_unknown_tee_type():
    result = verify_evidence("sgx", snp_evidence("milan"), SNP_POLICY, now=NOW)

    assert codes(result) == {FailureCode.INVALID_ARGUMENT}


def test_it_rejects_evidence_of_another_tee_type_than_the_backend():
    result = verify_evidence(TeeType.TDX, snp_evidence("milan"), TDX_POLICY, now=NOW)

    assert codes(result) == {FailureCode.WRONG_TEE_TYPE}


@pytest.mark.parametrize(
    "policy",
    [
        {},
        {"measurements": [], "min_tcb": "any"},
        {"measurements": ["abc"], "min_tcb": "any"},
        {"measurements": ["zz" * 48], "min_tcb": "any"},
        {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any", "allow_debugg": True},
        {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any", "allowed_vmpls": [4]},
        {"measurements": [MILAN_MEASUREMENT], "min_tcb": {"Milan": {"snp": 256}}},
        {"measurements": [MILAN_MEASUREMENT]},
        "not a policy",
    ],
)
def test_it_rejects_an_invalid_policy(policy):
    result = verify_evidence(TeeType.SEV_SNP, snp_evidence("milan"), policy, now=NOW)

    assert codes(result) == {FailureCode.INVALID_POLICY}


def test_it_turns_an_unexpected_crash_into_a_failure(monkeypatch, caplog):
    from inference.attestation import snp

    def explode(data):
        raise RuntimeError("boom")

    monkeypatch.setattr(snp.SnpReport, "parse", staticmethod(explode))

    result = verify_evidence(TeeType.SEV_SNP, snp_evidence("milan"), SNP_POLICY, now=NOW)

    assert codes(result) == {FailureCode.INTERNAL_ERROR}
    assert "boom" not in result.failures[0].message
    assert "crashed" in caplog.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tee_type=st.sampled_from([TeeType.SEV_SNP, TeeType.TDX]),
    report=st.one_of(
        st.binary(max_size=6000),
        st.binary(min_size=1184, max_size=1184),
        # Mostly-genuine reports with random bytes spliced in reach the deeper checks. The
        # splice lands before the end of the signature (0x330): the reserved bytes after it
        # are not signed, so changing only those would leave a genuine report.
        st.tuples(st.integers(0, 0x32F), st.binary(min_size=1, max_size=64)).map(
            lambda cut: (milan_report()[: cut[0]] + cut[1] + milan_report())[:1184]
        ),
    ),
    auxblob=st.one_of(st.none(), st.binary(max_size=2000)),
)
def test_random_bytes_never_pass_and_never_raise(tee_type, report, auxblob):
    result = verify_evidence(
        tee_type, Evidence(tee_type, report, auxblob), POLICIES[tee_type], now=NOW
    )

    assert result.ok is False
    assert result.failures
    # Each failure is a specific reason, not the verifier's catch-all for a crash.
    assert FailureCode.INTERNAL_ERROR not in codes(result)


def test_a_deeply_nested_agent_reply_is_malformed_not_a_crash():
    from inference.attestation import AgentReplyError, parse_agent_reply

    with pytest.raises(AgentReplyError):
        parse_agent_reply(b"[" * 100_000)
