"""Every new TDX policy field accepts and refuses as documented, and the defaults are strict.

The genuine v4 quote (UpToDate, no advisories) shows the identity fields, XFAM,
TD_ATTRIBUTES and TEE_TCB_SVN. No public quote with valid collateral is OutOfDate with
advisories, so the status/advisory rules are judged by `check_tdx_policy` on the parsed
genuine quote with the status and advisories dcap-qvl would report.
"""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from inference.attestation import (
    FailureCode,
    TdxPolicy,
    TdxQuote,
    TeeType,
    policy_review,
    verify_evidence,
)
from inference.attestation.tdx import check_tdx_policy

from .conftest import NOW, TDX_V4_MRTD, read, tdx_evidence

ADVISORIES = ["INTEL-SA-00615", "INTEL-SA-00828"]


def codes(failures) -> set[str]:
    return {failure.code for failure in failures}


def verify(**fields):
    return verify_evidence(
        TeeType.TDX, tdx_evidence(4), {"mrtds": [TDX_V4_MRTD], **fields}, now=NOW
    )


def quote_with(**td_fields: bytes) -> TdxQuote:
    quote = TdxQuote.parse(read("tdx/tdx_quote_v4.bin"))
    return dataclasses.replace(quote, td_report={**quote.td_report, **td_fields})


def judge(quote: TdxQuote, status="UpToDate", advisories=(), **fields) -> set[str]:
    policy = TdxPolicy.model_validate({"mrtds": [TDX_V4_MRTD], **fields})
    return codes(check_tdx_policy(quote, policy, status, list(advisories)))


def test_the_defaults_are_the_strict_choices():
    policy = TdxPolicy(mrtds=[TDX_V4_MRTD])

    assert policy.require_sept_ve_disable is True
    assert policy.allow_debug is False
    assert policy.accepted_tcb_statuses == ["UpToDate"]
    assert policy.accepted_advisories == []


@pytest.mark.parametrize(
    ("field", "claim"),
    [("mrconfigid", "mr_config_id"), ("mrowner", "mr_owner"), ("mrownerconfig", "mr_owner_config")],
)
def test_the_td_identity_fields_must_match_exactly(field, claim):
    value = verify().claims[claim]

    assert verify(**{field: value}).ok
    result = verify(**{field: "11" * 48})
    assert codes(result.failures) == {FailureCode.TD_IDENTITY_MISMATCH}
    assert field.upper() in result.failures[0].message


def test_xfam_must_match_exactly():
    assert verify(xfam="E702060000000000").ok
    assert codes(verify(xfam="e700060000000000").failures) == {FailureCode.XFAM_MISMATCH}


def test_td_attributes_must_match_exactly():
    assert verify(td_attributes="0000001000000000").ok
    result = verify(td_attributes="0000001040000000")
    assert codes(result.failures) == {FailureCode.TD_ATTRIBUTES_MISMATCH}


def test_sept_ve_disable_is_required_unless_the_policy_waives_it():
    without = quote_with(td_attributes=bytes(8))

    assert judge(quote_with()) == set()
    assert judge(without) == {FailureCode.TD_ATTRIBUTES_MISMATCH}
    assert judge(without, require_sept_ve_disable=False) == set()


def test_debug_is_refused_unless_allowed():
    debug = quote_with(td_attributes=(0x10000001).to_bytes(8, "little"))

    assert judge(debug) == {FailureCode.DEBUG_ENABLED}
    assert judge(debug, allow_debug=True) == set()


@pytest.mark.parametrize(
    "document",
    [
        {"td_attributes": "0000000000000000"},
        {"td_attributes": "0100001000000000"},
        {"accepted_advisories": ["SA-1"]},
        {"accepted_advisories": "some"},
        {"min_tee_tcb_svn": "06"},
        {"xfam": "e7"},
    ],
)
def test_contradictory_or_malformed_fields_are_refused(document):
    with pytest.raises(ValidationError):
        TdxPolicy.model_validate({"mrtds": [TDX_V4_MRTD], **document})


@pytest.mark.parametrize(
    ("minimum", "ok"),
    [
        ("06010300000000000000000000000000", True),
        ("00000000000000000000000000000000", True),
        ("07010300000000000000000000000000", False),
        ("06020300000000000000000000000000", False),
        ("06010300000000000000000000000001", False),
    ],
)
def test_every_component_of_tee_tcb_svn_must_reach_its_minimum(minimum, ok):
    # The genuine quote's TEE_TCB_SVN is 06010300000000000000000000000000.
    result = verify(min_tee_tcb_svn=minimum)

    assert result.ok is ok
    if not ok:
        assert codes(result.failures) == {FailureCode.TEE_TCB_SVN_TOO_LOW}


def test_an_up_to_date_platform_passes_by_default():
    assert judge(quote_with(), "UpToDate", []) == set()


def test_an_out_of_date_platform_is_refused_by_default():
    assert judge(quote_with(), "OutOfDate", ADVISORIES) == {
        FailureCode.TCB_STATUS_NOT_ACCEPTED,
        FailureCode.ADVISORY_NOT_ACCEPTED,
    }


def test_an_out_of_date_platform_passes_only_when_every_advisory_is_accepted():
    accepting = {"accepted_tcb_statuses": ["UpToDate", "OutOfDate"]}

    assert (
        judge(quote_with(), "OutOfDate", ADVISORIES, **accepting, accepted_advisories=ADVISORIES)
        == set()
    )
    assert judge(
        quote_with(), "OutOfDate", ADVISORIES, **accepting, accepted_advisories=ADVISORIES[:1]
    ) == {FailureCode.ADVISORY_NOT_ACCEPTED}
    assert (
        judge(quote_with(), "OutOfDate", ADVISORIES, **accepting, accepted_advisories="any")
        == set()
    )


def test_advisory_ids_are_normalised_to_intels_spelling():
    policy = TdxPolicy(mrtds=[TDX_V4_MRTD], accepted_advisories=["intel-sa-00615"])

    assert policy.accepted_advisories == ["INTEL-SA-00615"]


def test_the_review_marks_open_tdx_fields():
    fields = {f.field: f for f in policy_review(TdxPolicy(mrtds=[TDX_V4_MRTD]))}

    assert fields["mrtds"].pinned
    assert fields["require_sept_ve_disable"].pinned
    assert fields["accepted_tcb_statuses"].pinned
    assert fields["accepted_advisories"].pinned
    assert not fields["mrconfigid"].pinned
    assert not fields["xfam"].pinned
    assert not fields["min_tee_tcb_svn"].pinned
    waived = {
        f.field: f
        for f in policy_review(
            TdxPolicy(mrtds=[TDX_V4_MRTD], require_sept_ve_disable=False, accepted_advisories="any")
        )
    }
    assert "#VE" in waived["require_sept_ve_disable"].warning
    assert not waived["accepted_advisories"].pinned
