"""Policies stored under the first schema keep loading, and keep their meaning."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from inference.attestation import FailureCode, TeeType, policy_from_json, verify_evidence
from inference.attestation.challenge import tee_of
from inference.attestation.selectors import policy_active, policy_export
from inference.models import AttestationPolicy, Backend

from .conftest import GENUINE_SNP, NOW, TDX_V4_MRTD, genuine_evidence, tdx_evidence

migration = importlib.import_module("inference.migrations.0003_attestation_policy_schema_v2")

# Documents exactly as the first schema stored them (normalised, defaults included).
OLD_SNP = {
    "measurements": [GENUINE_SNP["milan_v5"].measurement],
    "allow_debug": False,
    "min_tcb": {"bootloader": 4, "tee": 0, "snp": 29, "microcode": 222},
    "host_data": None,
    "allowed_vmpls": [0],
    "signing_keys": ["vcek", "vlek"],
    "report_data": None,
}
OLD_TDX = {
    "mrtds": [TDX_V4_MRTD],
    "rtmr0": None,
    "rtmr1": None,
    "rtmr2": None,
    "rtmr3": None,
    "allow_debug": False,
    "report_data": None,
    "accepted_tcb_statuses": ["UpToDate"],
}


def codes(result) -> set[str]:
    return {failure.code for failure in result.failures}


def test_an_old_snp_document_becomes_the_same_minimum_on_milan_and_genoa():
    upgraded = migration.upgrade_document("sev-snp", OLD_SNP)

    levels = {"bootloader": 4, "tee": "any", "snp": 29, "microcode": 222}
    assert upgraded["min_tcb"] == {"Milan": levels, "Genoa": levels}
    assert upgraded["allow_migration_agent"] is True
    assert upgraded["allow_cxl"] is True
    policy_from_json(TeeType.SEV_SNP, upgraded)


def test_the_upgraded_snp_policy_enforces_what_the_old_one_did():
    upgraded = migration.upgrade_document("sev-snp", OLD_SNP)
    stricter = migration.upgrade_document(
        "sev-snp", {**OLD_SNP, "min_tcb": {**OLD_SNP["min_tcb"], "microcode": 223}}
    )
    now = GENUINE_SNP["milan_v5"].now

    assert verify_evidence(TeeType.SEV_SNP, genuine_evidence("milan_v5"), upgraded, now=now).ok
    too_low = verify_evidence(TeeType.SEV_SNP, genuine_evidence("milan_v5"), stricter, now=now)
    assert codes(too_low) == {FailureCode.TCB_TOO_LOW}
    # Turin could not be verified at all before; it is not accepted by an old policy now.
    turin = migration.upgrade_document(
        "sev-snp", {**OLD_SNP, "measurements": [GENUINE_SNP["turin_v5"].measurement]}
    )
    result = verify_evidence(
        TeeType.SEV_SNP, genuine_evidence("turin_v5"), turin, now=GENUINE_SNP["turin_v5"].now
    )
    assert codes(result) == {FailureCode.PRODUCT_NOT_ALLOWED}


def test_an_old_tdx_document_keeps_not_checking_sept_ve_and_advisories():
    upgraded = migration.upgrade_document("tdx", OLD_TDX)

    assert upgraded["require_sept_ve_disable"] is False
    assert upgraded["accepted_advisories"] == "any"
    assert verify_evidence(TeeType.TDX, tdx_evidence(4), upgraded, now=NOW).ok


@pytest.mark.parametrize(("tee_type", "old"), [("sev-snp", OLD_SNP), ("tdx", OLD_TDX)])
def test_downgrading_gives_back_the_first_schemas_document(tee_type, old):
    assert migration.downgrade_document(tee_type, migration.upgrade_document(tee_type, old)) == old


def test_an_upgraded_document_is_left_alone():
    upgraded = migration.upgrade_document("sev-snp", OLD_SNP)

    assert migration.upgrade_document("sev-snp", upgraded) == upgraded


@pytest.mark.django_db
def test_stored_policies_keep_loading_after_the_migration():
    snp = Backend.objects.create(
        name="old-snp", base_url="https://127.0.0.1:1/v1", tee_type="sev-snp"
    )
    tdx = Backend.objects.create(name="old-tdx", base_url="https://127.0.0.1:2/v1", tee_type="tdx")
    # Written as the first schema stored them, past today's validation.
    AttestationPolicy.objects.create(backend=snp, version=1, tee_type="sev-snp", document=OLD_SNP)
    AttestationPolicy.objects.create(backend=tdx, version=1, tee_type="tdx", document=OLD_TDX)

    migration.upgrade(apps, None)

    for backend in (snp, tdx):
        row = policy_active(backend=backend)
        assert policy_from_json(tee_of(backend), row.document)
        exported = policy_export(backend=backend)
        assert exported["version"] == 1
    assert policy_active(backend=snp).document["min_tcb"]["Genoa"]["snp"] == 29
