"""Every SEV-SNP policy field accepts and refuses as documented, and the defaults are strict.

Where a genuine report shows the value, the whole verifier runs on it. Where none does (no
public report has a migration agent, CXL or ciphertext hiding), the field is set on a
parsed genuine report and `check_snp_policy` judges it alone: flipping the bit in the
signed bytes would also break the signature, which is tested elsewhere.
"""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from inference.attestation import (
    FailureCode,
    SnpPolicy,
    SnpReport,
    TeeType,
    policy_review,
    verify_evidence,
)
from inference.attestation.snp import check_snp_policy
from inference.attestation.snp_report import POLICY_BITS

from .conftest import GENUINE_SNP, exact_policy, genuine_evidence, read


def codes(failures) -> set[str]:
    return {failure.code for failure in failures}


def verify(name: str, **fields):
    vector = GENUINE_SNP[name]
    result = verify_evidence(
        TeeType.SEV_SNP, genuine_evidence(name), exact_policy(name, **fields), now=vector.now
    )
    return result


def judge(name: str, report_fields: dict | None = None, **fields) -> set[str]:
    """Only the policy, on a genuine report with `report_fields` replaced."""
    vector = GENUINE_SNP[name]
    report = dataclasses.replace(SnpReport.parse(read(vector.report)), **(report_fields or {}))
    policy = SnpPolicy.model_validate(exact_policy(name, **fields))
    return codes(check_snp_policy(report, policy, vector.product))


def with_bit(name: str, bit: str, value: bool) -> dict:
    policy = SnpReport.parse(read(GENUINE_SNP[name].report)).policy
    mask = 1 << POLICY_BITS[bit]
    return {"policy": policy | mask if value else policy & ~mask}


# Defaults ----------------------------------------------------------------------------------


def test_the_defaults_are_the_strict_choices():
    policy = SnpPolicy(measurements=["ab" * 48], min_tcb="any")

    assert policy.allow_debug is False
    assert policy.allow_migration_agent is False
    assert policy.allow_cxl is False
    assert policy.allowed_vmpls == [0]


@pytest.mark.parametrize(
    "document",
    [
        {"min_tcb": "any"},
        {"measurements": ["ab" * 48]},
        {"measurements": ["ab" * 48], "min_tcb": {}},
        {"measurements": ["ab" * 48], "min_tcb": {"Genoa": {"bootloader": 10}}},
        {
            "measurements": ["ab" * 48],
            "min_tcb": {"Turin": {"bootloader": 1, "tee": 1, "snp": 4, "microcode": 81}},
        },
        {
            "measurements": ["ab" * 48],
            "min_tcb": {"Milan": {"bootloader": 1, "tee": 0, "snp": 1, "microcode": 1, "fmc": 0}},
        },
        {"measurements": ["ab" * 48], "min_tcb": {"Venice": "any"}},
        {
            "measurements": ["ab" * 48],
            "min_tcb": {"Genoa": {"bootloader": 256, "tee": 0, "snp": 0, "microcode": 0}},
        },
        {
            "measurements": ["ab" * 48],
            "min_tcb": {"Genoa": {"bootloader": True, "tee": 0, "snp": 0, "microcode": 0}},
        },
    ],
    ids=[
        "no-measurement",
        "no-min-tcb",
        "no-product",
        "missing-component",
        "turin-without-fmc",
        "milan-with-fmc",
        "unknown-product",
        "out-of-range",
        "bool-is-not-a-level",
    ],
)
def test_a_minimum_tcb_is_required_for_each_component_of_each_product(document):
    with pytest.raises(ValidationError):
        SnpPolicy.model_validate(document)


def test_the_strict_defaults_refuse_what_they_promise():
    assert judge("genoa_v5", with_bit("genoa_v5", "migrate_ma", True)) == {
        FailureCode.GUEST_POLICY_NOT_ALLOWED
    }
    assert judge("genoa_v5", with_bit("genoa_v5", "cxl_allow", True)) == {
        FailureCode.GUEST_POLICY_NOT_ALLOWED
    }
    assert judge("genoa_v5", with_bit("genoa_v5", "debug", True)) == {FailureCode.DEBUG_ENABLED}
    assert judge("genoa_v5", {"vmpl": 1}) == {FailureCode.VMPL_NOT_ALLOWED}


# Minimum TCB ------------------------------------------------------------------------------


def test_any_accepts_every_product_line_with_no_minimum():
    for name in GENUINE_SNP:
        assert verify(name, min_tcb="any").ok, name


def test_a_product_line_missing_from_min_tcb_is_refused():
    result = verify("turin_v5", min_tcb={"Genoa": "any", "Milan": "any"})

    assert codes(result.failures) == {FailureCode.PRODUCT_NOT_ALLOWED}
    assert "Turin" in result.failures[0].message


@pytest.mark.parametrize("component", ["fmc", "bootloader", "tee", "snp", "microcode"])
def test_each_turin_component_must_reach_its_minimum(component):
    tcb = dict(GENUINE_SNP["turin_v5"].reported_tcb)
    higher = {**tcb, component: tcb[component] + 1}
    only_this = {**dict.fromkeys(tcb, "any"), component: tcb[component]}

    assert verify("turin_v5", min_tcb={"Turin": only_this}).ok
    result = verify("turin_v5", min_tcb={"Turin": higher})
    assert codes(result.failures) == {FailureCode.TCB_TOO_LOW}
    assert component in result.failures[0].message


@pytest.mark.parametrize("component", ["bootloader", "snp", "microcode"])
def test_each_genoa_component_must_reach_its_minimum(component):
    tcb = dict(GENUINE_SNP["genoa_v5"].reported_tcb)

    result = verify("genoa_v5", min_tcb={"Genoa": {**tcb, component: tcb[component] + 1}})

    assert codes(result.failures) == {FailureCode.TCB_TOO_LOW}


# Firmware and ABI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minimum", "ok"),
    [("1.58", True), ("1.58.3", True), ("1.57.200", True), ("1.58.4", False), ("1.59", False)],
)
def test_the_minimum_firmware_applies_to_current_and_committed(minimum, ok):
    result = verify("turin_v5_fw158", min_firmware=minimum)

    assert result.ok is ok
    if not ok:
        assert codes(result.failures) == {FailureCode.FIRMWARE_TOO_OLD}
        assert {"current", "committed"} == {f.message.split()[0] for f in result.failures}


@pytest.mark.parametrize(
    ("minimum", "ok"), [("0.31", True), ("0.0", True), ("0.32", False), ("1.0", False)]
)
def test_the_minimum_abi_is_the_guest_policys(minimum, ok):
    result = verify("turin_v5", min_abi=minimum)

    assert result.ok is ok
    if not ok:
        assert codes(result.failures) == {FailureCode.ABI_TOO_OLD}


@pytest.mark.parametrize("bad", ["1", "1.55.40.1", "x.y", "1.256"])
def test_versions_are_validated(bad):
    with pytest.raises(ValidationError):
        SnpPolicy.model_validate(exact_policy("turin_v5", min_firmware=bad))


# Guest policy bits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "bit"),
    [("allow_migration_agent", "migrate_ma"), ("allow_cxl", "cxl_allow"), ("allow_smt", "smt")],
)
def test_an_allow_switch_refuses_its_bit_unless_set(field, bit):
    report = with_bit("genoa_v5", bit, True)

    assert judge("genoa_v5", report, **{field: False}) == {FailureCode.GUEST_POLICY_NOT_ALLOWED}
    assert judge("genoa_v5", report, **{field: True}) == set()
    assert judge("genoa_v5", with_bit("genoa_v5", bit, False), **{field: False}) == set()


def test_smt_is_allowed_by_default_and_refused_on_request_on_genuine_reports():
    assert verify("turin_v5").ok
    result = verify("turin_v5", allow_smt=False)
    assert codes(result.failures) == {FailureCode.GUEST_POLICY_NOT_ALLOWED}


@pytest.mark.parametrize(
    ("field", "bit"),
    [
        ("require_single_socket", "single_socket"),
        ("require_ciphertext_hiding", "ciphertext_hiding_dram"),
    ],
)
def test_a_require_switch_refuses_a_guest_without_its_bit(field, bit):
    assert codes(verify("genoa_v5", **{field: True}).failures) == {
        FailureCode.GUEST_POLICY_NOT_ALLOWED
    }
    assert judge("genoa_v5", with_bit("genoa_v5", bit, True), **{field: True}) == set()
    assert verify("genoa_v5", **{field: False}).ok


# PLATFORM_INFO ----------------------------------------------------------------------------


def test_required_platform_info_bits_must_be_set():
    # Genoa v5: PLATFORM_INFO 0x25 = SMT, ECC and alias check complete.
    assert verify("genoa_v5", required_platform_info=["ecc_enabled", "smt_enabled"]).ok
    result = verify(
        "genoa_v5", required_platform_info=["tsme_enabled", "ciphertext_hiding_dram_enabled"]
    )
    assert codes(result.failures) == {FailureCode.PLATFORM_INFO_MISSING}
    assert "tsme_enabled, ciphertext_hiding_dram_enabled" in result.failures[0].message
    assert (
        judge("genoa_v5", {"platform_info": 0x27}, required_platform_info=["tsme_enabled"]) == set()
    )


def test_unknown_platform_info_names_are_refused():
    with pytest.raises(ValidationError):
        SnpPolicy.model_validate(exact_policy("genoa_v5", required_platform_info=["reserved_6"]))


# Identity of the guest --------------------------------------------------------------------


def test_id_and_author_key_allow_lists():
    claims = verify("turin_v5").claims
    id_key, author_key = claims["id_key_digest"], claims["author_key_digest"]

    assert verify("turin_v5", id_key_digests=["ab" * 48, id_key]).ok
    assert verify("turin_v5", author_key_digests=[author_key]).ok
    assert codes(verify("turin_v5", id_key_digests=["ab" * 48]).failures) == {
        FailureCode.ID_KEY_NOT_ALLOWED
    }
    assert codes(verify("turin_v5", author_key_digests=["ab" * 48]).failures) == {
        FailureCode.AUTHOR_KEY_NOT_ALLOWED
    }
    with pytest.raises(ValidationError):
        SnpPolicy.model_validate(exact_policy("turin_v5", id_key_digests=[]))


def test_minimum_guest_svn():
    # The Turin report's GUEST_SVN is 2.
    assert verify("turin_v5", min_guest_svn=2).ok
    assert codes(verify("turin_v5", min_guest_svn=3).failures) == {FailureCode.GUEST_SVN_TOO_LOW}


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("host_data", FailureCode.HOST_DATA_MISMATCH),
        ("family_id", FailureCode.FAMILY_ID_MISMATCH),
        ("image_id", FailureCode.IMAGE_ID_MISMATCH),
    ],
)
def test_host_data_family_id_and_image_id_must_match_exactly(field, code):
    value = verify("turin_v5").claims[field]
    other = ("ff" if value[:2] != "ff" else "00") + value[2:]

    assert verify("turin_v5", **{field: value.upper()}).ok
    assert codes(verify("turin_v5", **{field: other}).failures) == {code}


# Mitigation vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("launch", "current", "ok"),
    [(0xB, 0xB, True), (0x3, 0x8, True), (0x4, None, False), (None, 0x10, False)],
)
def test_required_mitigations_must_all_be_in_the_vectors(launch, current, ok):
    # Genoa v5 (firmware 1.55.49): both vectors are 0xb.
    result = verify(
        "genoa_v5", required_launch_mitigations=launch, required_current_mitigations=current
    )

    assert result.ok is ok
    if not ok:
        assert codes(result.failures) == {FailureCode.MITIGATION_MISSING}


def test_a_report_older_than_version_5_has_no_mitigation_vector_to_satisfy_a_requirement():
    result = verify("genoa_v3", required_current_mitigations=0)

    assert codes(result.failures) == {FailureCode.MITIGATION_MISSING}
    assert "version 3" in result.failures[0].message


# What the page shows ----------------------------------------------------------------------


def test_the_review_marks_open_fields_and_warns_about_each():
    policy = SnpPolicy.model_validate(
        {
            "measurements": ["ab" * 48],
            "min_tcb": {"Genoa": {"bootloader": 10, "tee": 0, "snp": "any", "microcode": 84}},
        }
    )

    fields = {field.field: field for field in policy_review(policy)}

    assert fields["measurements"].pinned
    assert fields["min_tcb.Genoa.bootloader"].pinned
    assert not fields["min_tcb.Genoa.snp"].pinned
    assert "any snp SPL is accepted on Genoa" in fields["min_tcb.Genoa.snp"].warning
    assert fields["min_tcb.Turin"].pinned and fields["min_tcb.Turin"].value == "not accepted"
    assert fields["allow_debug"].pinned
    assert not fields["host_data"].pinned
    assert not fields["require_crl"].pinned
    assert "report_data" not in fields


def test_a_fully_pinned_policy_has_no_warning():
    claims = verify("turin_v5").claims
    policy = SnpPolicy.model_validate(
        exact_policy(
            "turin_v5",
            min_firmware="1.55",
            min_abi="0.31",
            allow_smt=False,
            require_single_socket=True,
            require_ciphertext_hiding=True,
            required_platform_info=["smt_enabled"],
            id_key_digests=[claims["id_key_digest"]],
            author_key_digests=[claims["author_key_digest"]],
            min_guest_svn=2,
            host_data=claims["host_data"],
            family_id=claims["family_id"],
            image_id=claims["image_id"],
            required_launch_mitigations=0x3F,
            required_current_mitigations=0x3F,
            require_crl=True,
        )
    )

    assert [field.warning for field in policy_review(policy) if field.warning] == []
