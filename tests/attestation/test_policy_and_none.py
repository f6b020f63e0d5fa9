"""Policies (validation, defaults, JSON round trip), the `none` verifier and pinned roots."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inference.attestation import (
    Evidence,
    FailureCode,
    NonePolicy,
    SnpPolicy,
    TdxPolicy,
    TeeType,
    check_pinned_roots,
    policy_from_json,
    roots,
    verify_evidence,
)
from inference.attestation.dispatch import configure, verifier_for
from inference.attestation.snp import SnpVerifier

from .conftest import MILAN_MEASUREMENT, NOW, TDX_V4_MRTD


def test_the_defaults_are_strict():
    snp = SnpPolicy(measurements=[MILAN_MEASUREMENT], min_tcb="any")
    tdx = TdxPolicy(mrtds=[TDX_V4_MRTD])

    assert snp.allow_debug is False
    assert snp.allowed_vmpls == [0]
    assert tdx.allow_debug is False
    assert tdx.accepted_tcb_statuses == ["UpToDate"]
    assert NonePolicy().allow_insecure is False


@pytest.mark.parametrize(
    ("tee_type", "policy"),
    [
        (
            TeeType.SEV_SNP,
            SnpPolicy(
                measurements=[MILAN_MEASUREMENT],
                min_tcb={"Milan": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}},
                host_data="AB" * 32,
                allowed_vmpls=[0, 1],
                report_data="cd" * 64,
            ),
        ),
        (TeeType.TDX, TdxPolicy(mrtds=[TDX_V4_MRTD], rtmr3="00" * 48)),
        (TeeType.NONE, NonePolicy(allow_insecure=True)),
    ],
)
def test_policies_round_trip_through_json(tee_type, policy):
    assert policy_from_json(tee_type, policy.model_dump_json()) == policy
    assert policy_from_json(tee_type, policy.model_dump(mode="json")) == policy


def test_hex_is_normalised_to_lower_case():
    policy = SnpPolicy(measurements=[MILAN_MEASUREMENT.upper()], min_tcb="any")

    assert policy.measurements == [MILAN_MEASUREMENT]


@pytest.mark.parametrize(
    "data",
    [
        {"mrtds": []},
        {"mrtds": [TDX_V4_MRTD], "rtmr0": "00"},
        {"mrtds": [TDX_V4_MRTD], "accepted_tcb_statuses": ["Revoked"]},
        {"mrtds": [TDX_V4_MRTD], "accepted_tcb_statuses": []},
        {"mrtds": [TDX_V4_MRTD], "unknown": 1},
    ],
)
def test_invalid_tdx_policies_are_rejected(data):
    with pytest.raises(ValidationError):
        policy_from_json(TeeType.TDX, data)


def test_the_none_verifier_fails_without_an_explicit_opt_in():
    evidence = Evidence(TeeType.NONE)

    for policy in ({}, {"allow_insecure": False}):
        result = verify_evidence(TeeType.NONE, evidence, policy, now=NOW)
        assert not result.ok
        assert [failure.code for failure in result.failures] == [FailureCode.INSECURE_NOT_ALLOWED]
        assert result.claims["confidential"] is False


def test_the_none_verifier_passes_with_allow_insecure_and_says_not_confidential():
    result = verify_evidence(
        TeeType.NONE, Evidence(TeeType.NONE), {"allow_insecure": True}, now=NOW
    )

    assert result.ok
    assert result.claims == {"tee_type": "none", "confidential": False, "report_data": None}


def test_the_none_verifier_does_not_accept_hardware_evidence_for_a_none_backend():
    evidence = Evidence(TeeType.SEV_SNP, b"x")

    result = verify_evidence(TeeType.NONE, evidence, {"allow_insecure": True}, now=NOW)

    assert not result.ok


def test_configure_installs_a_verifier_with_a_cache(tmp_path):
    original = verifier_for(TeeType.SEV_SNP)
    try:
        configure({TeeType.SEV_SNP: SnpVerifier(vcek_cache=tmp_path)})
        assert verifier_for("sev_snp").vcek_cache == tmp_path
        with pytest.raises(ValueError, match="does not verify"):
            configure({TeeType.TDX: SnpVerifier()})
    finally:
        configure({TeeType.SEV_SNP: original})


def test_the_shipped_roots_match_their_pins():
    check_pinned_roots()


def test_a_swapped_root_file_fails_closed(tmp_path, monkeypatch):
    for path in roots.TRUST_DIR.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    # Put the Genoa ARK where the Milan one belongs.
    (tmp_path / "ark_milan.pem").write_bytes((roots.TRUST_DIR / "ark_genoa.pem").read_bytes())
    monkeypatch.setattr(roots, "TRUST_DIR", tmp_path)
    roots._load_pinned.cache_clear()
    roots.amd_chain.cache_clear()
    try:
        with pytest.raises(roots.PinnedRootError, match=r"ark_milan\.pem"):
            check_pinned_roots()
    finally:
        monkeypatch.undo()
        roots._load_pinned.cache_clear()
        roots.amd_chain.cache_clear()


def test_a_verification_with_a_swapped_root_file_fails_as_untrusted(tmp_path, monkeypatch):
    from .conftest import snp_evidence

    for path in roots.TRUST_DIR.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "ask_milan.pem").write_bytes((roots.TRUST_DIR / "ask_genoa.pem").read_bytes())
    monkeypatch.setattr(roots, "TRUST_DIR", tmp_path)
    roots._load_pinned.cache_clear()
    roots.amd_chain.cache_clear()
    try:
        result = verify_evidence(
            TeeType.SEV_SNP,
            snp_evidence("milan"),
            {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any"},
            now=NOW,
        )
        assert [failure.code for failure in result.failures] == [FailureCode.ROOT_NOT_TRUSTED]
    finally:
        monkeypatch.undo()
        roots._load_pinned.cache_clear()
        roots.amd_chain.cache_clear()
