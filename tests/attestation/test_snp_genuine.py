"""SEV-SNP on genuine reports of every supported version (2, 3, 5) and product line (Milan,
Genoa, Turin), each also tampered with in memory, and Turin's own rules."""

from __future__ import annotations

import struct

import pytest

from inference.attestation import FailureCode, SnpReport, TeeType, verify_evidence, verify_genuine

from .conftest import GENUINE_SNP, exact_policy, genuine_evidence, read

VERSIONS_AND_PRODUCTS = {(vector.version, vector.product) for vector in GENUINE_SNP.values()}

# Offsets of the fields a tamper test flips a bit in (AMD SEV-SNP ABI, ATTESTATION_REPORT).
TAMPERED = {
    "measurement": 0x90,
    "report_data": 0x50,
    "policy": 0x08,
    "chip_id": 0x1A0,
    "signature": 0x2A0,
}


def codes(result) -> set[str]:
    return {failure.code for failure in result.failures}


def flipped(name: str, offset: int) -> bytes:
    report = bytearray(read(GENUINE_SNP[name].report))
    report[offset] ^= 0x01
    return bytes(report)


def test_the_vectors_cover_every_version_and_product_line():
    assert {
        (2, "Milan"),
        (3, "Milan"),
        (5, "Milan"),
        (3, "Genoa"),
        (5, "Genoa"),
        (5, "Turin"),
    } <= VERSIONS_AND_PRODUCTS


@pytest.mark.parametrize("name", sorted(GENUINE_SNP))
def test_every_genuine_report_verifies_under_a_policy_pinning_its_exact_tcb(name):
    vector = GENUINE_SNP[name]

    result = verify_evidence(
        TeeType.SEV_SNP, genuine_evidence(name), exact_policy(name), now=vector.now
    )

    assert result.ok, result.reasons
    assert result.claims["version"] == vector.version
    assert result.claims["product"] == vector.product
    assert result.claims["signing_key"] == vector.signing_key
    assert result.claims["measurement"] == vector.measurement
    reported = dict(result.claims["reported_tcb"])
    reported.pop("raw")
    assert reported == vector.reported_tcb
    assert len(result.cert_chain) == 3


@pytest.mark.parametrize("name", sorted(GENUINE_SNP))
def test_every_genuine_report_is_genuine_without_a_policy(name):
    vector = GENUINE_SNP[name]

    result = verify_genuine(TeeType.SEV_SNP, genuine_evidence(name), now=vector.now)

    assert result.ok, result.reasons


@pytest.mark.parametrize("field", sorted(TAMPERED))
@pytest.mark.parametrize("name", sorted(GENUINE_SNP))
def test_a_flipped_bit_in_any_signed_field_fails(name, field):
    vector = GENUINE_SNP[name]
    evidence = genuine_evidence(name, report=flipped(name, TAMPERED[field]))

    result = verify_evidence(TeeType.SEV_SNP, evidence, exact_policy(name), now=vector.now)

    assert not result.ok
    assert FailureCode.SIGNATURE_INVALID in codes(result)
    if field == "chip_id" and vector.signing_key == "vcek":
        assert FailureCode.CHIP_ID_MISMATCH in codes(result)
    if field == "measurement":
        assert FailureCode.MEASUREMENT_MISMATCH in codes(result)


@pytest.mark.parametrize(
    ("name", "launch", "current"),
    [
        ("milan_v5", "000000000000000b", "000000000000000b"),
        ("genoa_v5", "000000000000000b", "000000000000000b"),
        ("turin_v5", "000000000000003f", "000000000000003f"),
        ("genoa_v3", None, None),
    ],
)
def test_it_reads_the_mitigation_vectors_of_version_5(name, launch, current):
    claims = verify_genuine(
        TeeType.SEV_SNP, genuine_evidence(name), now=GENUINE_SNP[name].now
    ).claims

    assert claims["launch_mit_vector"] == launch
    assert claims["current_mit_vector"] == current


def test_it_reads_every_field_of_a_turin_report():
    claims = verify_genuine(
        TeeType.SEV_SNP, genuine_evidence("turin_v5"), now=GENUINE_SNP["turin_v5"].now
    ).claims

    assert claims["cpuid"] == {"family": 0x1A, "model": 0x02, "stepping": 1, "product": "Turin"}
    assert claims["certificate_product_name"] == "Turin"
    assert claims["reported_tcb"] == {
        "raw": "5100000004010101",
        "fmc": 1,
        "bootloader": 1,
        "tee": 1,
        "snp": 4,
        "microcode": 81,
    }
    assert claims["current_version"] == "1.55.65"
    assert claims["chip_id"] == "59790fb1c39f35c1" + "00" * 56
    assert claims["guest_svn"] == 2
    assert claims["family_id"] == "01" + "00" * 15
    assert claims["image_id"] == "02" + "00" * 15
    assert claims["policy"]["abi_minor"] == 31
    assert claims["policy"]["smt"] is True
    assert claims["policy"]["debug"] is False


def test_reserved_platform_info_bits_of_genuine_turin_firmware_are_reported_not_fatal():
    result = verify_evidence(
        TeeType.SEV_SNP,
        genuine_evidence("turin_v5_fw158"),
        exact_policy("turin_v5_fw158"),
        now=GENUINE_SNP["turin_v5_fw158"].now,
    )

    assert result.ok, result.reasons
    assert result.claims["platform_info"] == "0000000000000065"
    assert result.claims["platform_info_bits"]["reserved"] == "0x40"
    assert result.claims["platform_info_bits"]["smt_enabled"] is True
    assert result.claims["platform_info_bits"]["alias_check_complete"] is True


def test_the_turin_tcb_layout_is_checked_against_the_fmc_spl_of_the_certificate():
    # REPORTED_TCB byte 0 is the FMC on Turin: the certificate's fmcSPL no longer matches.
    evidence = genuine_evidence("turin_v5", report=flipped("turin_v5", 0x180))

    result = verify_evidence(
        TeeType.SEV_SNP, evidence, exact_policy("turin_v5"), now=GENUINE_SNP["turin_v5"].now
    )

    assert FailureCode.CERTIFICATE_TCB_MISMATCH in codes(result)
    assert "'fmc': 0" in next(
        f.message for f in result.failures if f.code == FailureCode.CERTIFICATE_TCB_MISMATCH
    )


def test_the_turin_hwid_must_be_the_chip_ids_first_8_bytes_and_the_rest_zero():
    evidence = genuine_evidence("turin_v5", report=flipped("turin_v5", 0x1A0 + 8))

    result = verify_evidence(
        TeeType.SEV_SNP, evidence, exact_policy("turin_v5"), now=GENUINE_SNP["turin_v5"].now
    )

    assert FailureCode.CHIP_ID_MISMATCH in codes(result)


def test_a_report_whose_cpuid_names_another_product_than_its_certificate_fails():
    # Genoa's CPUID on a Turin report: the signature breaks too, but the product check
    # names the mismatch on its own code.
    report = bytearray(read(GENUINE_SNP["turin_v5"].report))
    report[0x188:0x18A] = bytes([0x19, 0x11])
    evidence = genuine_evidence("turin_v5", report=bytes(report))

    result = verify_evidence(
        TeeType.SEV_SNP, evidence, exact_policy("turin_v5"), now=GENUINE_SNP["turin_v5"].now
    )

    assert FailureCode.PRODUCT_MISMATCH in codes(result)


def test_a_turin_certificate_for_a_genoa_report_fails_on_the_product():
    evidence = genuine_evidence("genoa_v5")
    turin = genuine_evidence("turin_v5")
    evidence = type(evidence)(evidence.tee_type, evidence.report, turin.auxblob)

    result = verify_evidence(
        TeeType.SEV_SNP, evidence, exact_policy("genoa_v5"), now=GENUINE_SNP["genoa_v5"].now
    )

    assert {FailureCode.PRODUCT_MISMATCH, FailureCode.SIGNATURE_INVALID} <= codes(result)


def test_a_version_2_report_cannot_claim_a_turin_certificate():
    report = bytearray(read(GENUINE_SNP["turin_v5"].report))
    report[0:4] = struct.pack("<I", 2)
    evidence = genuine_evidence("turin_v5", report=bytes(report))

    result = verify_genuine(TeeType.SEV_SNP, evidence, now=GENUINE_SNP["turin_v5"].now)

    assert FailureCode.PRODUCT_MISMATCH in codes(result)
    assert "cannot come from Turin" in " ".join(result.reasons)


@pytest.mark.parametrize(("family", "model"), [(0x17, 0x31), (0x19, 0x61), (0x1A, 0x50)])
def test_an_unknown_cpu_is_refused_with_its_own_code(family, model):
    report = bytearray(read(GENUINE_SNP["genoa_v5"].report))
    report[0x188:0x18A] = bytes([family, model])

    result = verify_genuine(
        TeeType.SEV_SNP,
        genuine_evidence("genoa_v5", report=bytes(report)),
        now=GENUINE_SNP["genoa_v5"].now,
    )

    assert codes(result) == {FailureCode.UNKNOWN_PRODUCT}


@pytest.mark.parametrize("version", [4, 6, 255])
def test_versions_other_than_2_3_and_5_are_refused_clearly(version):
    report = bytearray(read(GENUINE_SNP["genoa_v5"].report))
    report[0:4] = struct.pack("<I", version)

    result = verify_genuine(
        TeeType.SEV_SNP,
        genuine_evidence("genoa_v5", report=bytes(report)),
        now=GENUINE_SNP["genoa_v5"].now,
    )

    assert codes(result) == {FailureCode.UNSUPPORTED_VERSION}
    assert result.failures[0].message == (
        f"SNP report version {version} is not supported (supported: 2, 3, 5)"
    )


def test_the_bergamo_siena_model_is_on_genoas_line():
    report = SnpReport.parse(read(GENUINE_SNP["genoa_v5_siena"].report))

    assert report.cpuid == (0x19, 0xA0, 0x02)
    assert report.product == "Genoa"
