"""Intel TDX verification with dcap-qvl against genuine quotes and their collateral."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inference.attestation import FailureCode, TdxQuote, TdxVerifier, TeeType, verify_evidence

from .conftest import NOW, NOW_V5, TDX_V4_MRTD, TDX_V5_MRTD, read, tdx_evidence

# The v4 collateral window, inclusive, from data/README.md.
V4_FIRST = 1750329147
V4_LAST = 1752919234


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def codes(result) -> set[str]:
    return {failure.code for failure in result.failures}


@pytest.mark.parametrize("epoch", [V4_FIRST, int(NOW.timestamp()), V4_LAST])
def test_it_verifies_the_v4_quote_inside_its_collateral_window(epoch, tdx_policy):
    result = verify_evidence(TeeType.TDX, tdx_evidence(4), tdx_policy, now=at(epoch))

    assert result.ok, result.reasons
    assert result.claims["tcb_status"] == "UpToDate"
    assert result.claims["advisory_ids"] == []
    assert result.claims["fmspc"] == "B0C06F000000"
    assert len(result.cert_chain) == 3


@pytest.mark.parametrize("epoch", [V4_FIRST - 1, V4_LAST + 2, 1767225600])
def test_it_rejects_the_v4_quote_outside_its_collateral_window(epoch, tdx_policy):
    result = verify_evidence(TeeType.TDX, tdx_evidence(4), tdx_policy, now=at(epoch))

    assert not result.ok
    assert codes(result) == {FailureCode.COLLATERAL_NOT_VALID_NOW}


def test_it_reports_the_documented_td_report_fields(tdx_policy):
    claims = verify_evidence(TeeType.TDX, tdx_evidence(4), tdx_policy, now=NOW).claims

    assert claims["quote_version"] == 4
    assert claims["mr_td"] == TDX_V4_MRTD
    assert claims["measurement"] == TDX_V4_MRTD
    assert claims["td_attributes"] == "0000001000000000"
    assert claims["td_attributes_bits"]["debug"] is False
    assert claims["td_attributes_bits"]["sept_ve_disable"] is True
    assert claims["rtmr0"].startswith("44c0197b39157fdd")
    assert claims["rtmr3"] == "00" * 48
    assert claims["report_data"].startswith("9a9d48e7f6799642")
    assert claims["qe_vendor_id"] == "939a7233f79c4ca9940a0db3957f0607"


def test_it_rejects_the_v5_quote_whose_tcb_matches_no_level():
    result = verify_evidence(TeeType.TDX, tdx_evidence(5), {"mrtds": [TDX_V5_MRTD]}, now=NOW_V5)

    assert not result.ok
    assert codes(result) == {FailureCode.TCB_STATUS_NOT_ACCEPTED}
    assert "No matching TCB level" in result.failures[0].message


def test_it_parses_the_v5_td_report_1_5():
    quote = TdxQuote.parse(read("tdx/tdx_quote_v5_no_tcb_match.bin"))

    assert quote.version == 5
    assert quote.td_report["mr_td"].hex() == TDX_V5_MRTD
    assert quote.td_report["tee_tcb_svn2"].hex() == "0d010300000000000000000000000000"
    assert quote.td_report["report_data"].hex().startswith("d2142b643598eb5f")


def test_it_rejects_a_quote_with_one_mrtd_byte_flipped(tdx_policy):
    quote = bytearray(read("tdx/tdx_quote_v4.bin"))
    quote[48 + 136] ^= 0x01

    result = verify_evidence(TeeType.TDX, tdx_evidence(4, quote=bytes(quote)), tdx_policy, now=NOW)

    assert not result.ok
    assert FailureCode.SIGNATURE_INVALID in codes(result)


def test_it_rejects_an_unexpected_mrtd():
    result = verify_evidence(TeeType.TDX, tdx_evidence(4), {"mrtds": ["00" * 48]}, now=NOW)

    assert codes(result) == {FailureCode.MEASUREMENT_MISMATCH}


def test_it_checks_each_rtmr_the_policy_names(tdx_policy):
    claims = verify_evidence(TeeType.TDX, tdx_evidence(4), tdx_policy, now=NOW).claims
    exact = {**tdx_policy, **{f"rtmr{i}": claims[f"rtmr{i}"] for i in range(4)}}
    wrong = {**tdx_policy, "rtmr2": "11" * 48}

    assert verify_evidence(TeeType.TDX, tdx_evidence(4), exact, now=NOW).ok
    result = verify_evidence(TeeType.TDX, tdx_evidence(4), wrong, now=NOW)
    assert codes(result) == {FailureCode.RTMR_MISMATCH}


def test_it_checks_report_data(tdx_policy):
    policy = {**tdx_policy, "report_data": "00" * 64}

    result = verify_evidence(TeeType.TDX, tdx_evidence(4), policy, now=NOW)

    assert codes(result) == {FailureCode.REPORT_DATA_MISMATCH}


def test_it_rejects_a_debug_td_by_policy():
    # The genuine quotes are not debug TDs, so flip the bit: the signature breaks too, but
    # the policy failure must be reported on its own code.
    quote = bytearray(read("tdx/tdx_quote_v4.bin"))
    quote[48 + 120] |= 0x01

    result = verify_evidence(
        TeeType.TDX, tdx_evidence(4, quote=bytes(quote)), {"mrtds": [TDX_V4_MRTD]}, now=NOW
    )

    assert FailureCode.DEBUG_ENABLED in codes(result)
    assert not result.ok


def test_it_accepts_only_the_statuses_the_policy_lists(tdx_policy):
    policy = {**tdx_policy, "accepted_tcb_statuses": ["SWHardeningNeeded"]}

    result = verify_evidence(TeeType.TDX, tdx_evidence(4), policy, now=NOW)

    assert codes(result) == {FailureCode.TCB_STATUS_NOT_ACCEPTED}


def test_it_finds_collateral_in_an_operator_cache(tmp_path, tdx_policy):
    (tmp_path / "B0C06F000000.json").write_bytes(read("tdx/tdx_quote_v4_collateral.json"))
    evidence = tdx_evidence(4)
    without_auxblob = type(evidence)(evidence.tee_type, evidence.report)

    assert TdxVerifier(collateral_cache=tmp_path).verify(without_auxblob, tdx_policy, now=NOW).ok
    result = TdxVerifier().verify(without_auxblob, tdx_policy, now=NOW)
    assert codes(result) == {FailureCode.COLLATERAL_MISSING}
