"""AMD CRLs: operator-supplied per product line, checked when present, required by policy,
never fetched. A genuine Milan CRL (ARK-Milan, 2026-06-22 .. 2026-08-08, no entries) shows
the positive path and the window; `amd_fake` signs a CRL that revokes an ASK, which no
genuine CRL does."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from inference.attestation import Evidence, FailureCode, SnpVerifier, TeeType
from inference.attestation.snp import VCEK_GUID, build_cert_table

from .amd_fake import FakeAmd, resign
from .conftest import GENUINE_SNP, exact_policy, genuine_evidence, read

MILAN_CRL = "snp-v5/milan_crl.der"
CRL_FIRST = datetime(2026, 6, 22, 5, 53, 52, tzinfo=UTC)
CRL_LAST = datetime(2026, 8, 8, tzinfo=UTC)


def codes(result) -> set[str]:
    return {failure.code for failure in result.failures}


def verify(name: str, crls, *, now=None, **policy):
    vector = GENUINE_SNP[name]
    return SnpVerifier(crls=crls).verify(
        genuine_evidence(name), exact_policy(name, **policy), now=now or vector.now
    )


@pytest.mark.parametrize("name", ["milan_v5", "milan_v3"])
def test_a_genuine_crl_that_revokes_nothing_passes_and_is_reported(name):
    result = verify(name, {"Milan": read(MILAN_CRL)}, require_crl=True)

    assert result.ok, result.reasons
    assert result.claims["crl"] == {
        "checked": True,
        "this_update": "2026-06-22T05:53:52+00:00",
        "next_update": "2026-08-08T00:00:00+00:00",
        "revoked_count": 0,
    }


def test_the_crl_is_read_from_the_operators_folder_by_product_line(tmp_path):
    (tmp_path / "Milan.crl").write_bytes(read(MILAN_CRL))

    milan = verify("milan_v5", tmp_path, require_crl=True)
    genoa = verify("genoa_v5", tmp_path, require_crl=True)

    assert milan.ok, milan.reasons
    assert codes(genoa) == {FailureCode.CRL_MISSING}
    assert "Genoa.crl" in genoa.failures[0].message


def test_a_pem_crl_is_accepted(tmp_path):
    crl = x509.load_der_x509_crl(read(MILAN_CRL)).public_bytes(Encoding.PEM)

    assert verify("milan_v5", {"Milan": crl}, require_crl=True).ok


@pytest.mark.parametrize(
    "now",
    [CRL_FIRST.replace(second=51), datetime(2026, 8, 8, 0, 0, 1, tzinfo=UTC)],
    ids=["before-this-update", "after-next-update"],
)
def test_a_crl_outside_its_window_fails_with_its_own_code(now):
    inside = verify("milan_v5", {"Milan": read(MILAN_CRL)}, now=CRL_LAST)
    outside = verify("milan_v5", {"Milan": read(MILAN_CRL)}, now=now)

    assert inside.ok, inside.reasons
    assert codes(outside) == {FailureCode.COLLATERAL_NOT_VALID_NOW}
    assert "fetch a fresh one" in outside.failures[0].message


def test_another_product_lines_crl_is_not_amds_for_this_chain():
    result = verify("genoa_v5", {"Genoa": read(MILAN_CRL)})

    assert codes(result) == {FailureCode.CRL_INVALID}
    assert "ARK-Genoa" in result.failures[0].message


@pytest.mark.parametrize(
    "crl",
    [b"garbage", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", b"\x30" * 10],
)
def test_an_unreadable_crl_fails(crl):
    assert codes(verify("milan_v5", {"Milan": crl})) == {FailureCode.CRL_INVALID}


def test_a_crl_with_a_flipped_signature_bit_fails():
    crl = bytearray(read(MILAN_CRL))
    crl[-10] ^= 0x01

    assert codes(verify("milan_v5", {"Milan": bytes(crl)})) == {FailureCode.CRL_INVALID}


def test_a_crl_signed_by_another_key_in_arks_name_fails(monkeypatch):
    # A forger can copy ARK-Milan's name but not its key.
    forger = FakeAmd("Milan", "vcek")
    crl = forger.crl(revoked=[], this_update=CRL_FIRST)

    assert codes(verify("milan_v5", {"Milan": crl})) == {FailureCode.CRL_INVALID}


def test_without_a_crl_it_passes_unless_the_policy_requires_one():
    assert verify("milan_v5", None).ok
    assert codes(verify("milan_v5", None, require_crl=True)) == {FailureCode.CRL_MISSING}


def test_the_vlek_chain_reads_its_own_crl_file(tmp_path):
    (tmp_path / "Milan.crl").write_bytes(read(MILAN_CRL))
    vector = GENUINE_SNP["milan_v3_vlek"]
    verifier = SnpVerifier(crls=tmp_path)
    policy = exact_policy("milan_v3_vlek", require_crl=True)

    missing = verifier.verify(genuine_evidence("milan_v3_vlek"), policy, now=vector.now)
    (tmp_path / "Milan-vlek.crl").write_bytes(read(MILAN_CRL))
    present = verifier.verify(genuine_evidence("milan_v3_vlek"), policy, now=vector.now)

    assert codes(missing) == {FailureCode.CRL_MISSING}
    assert "Milan-vlek.crl" in missing.failures[0].message
    # The VLEK expired before this CRL was issued: the CRL was read, and is not current.
    assert codes(present) == {FailureCode.COLLATERAL_NOT_VALID_NOW}


def test_an_ask_revoked_by_amd_fails(monkeypatch):
    amd = FakeAmd("Genoa", "vcek")
    amd.install(monkeypatch)
    vector = GENUINE_SNP["genoa_v5"]
    report = read(vector.report)
    leaf, key = amd.leaf(vector.reported_tcb, hwid=report[0x1A0:0x1E0])
    evidence = Evidence(
        TeeType.SEV_SNP,
        resign(report, key, signing_key="vcek"),
        build_cert_table({VCEK_GUID: leaf.public_bytes(Encoding.DER)}),
    )
    this_update = datetime(2026, 6, 1, tzinfo=UTC)
    clean = amd.crl(revoked=[99], this_update=this_update)
    revoking = amd.crl(revoked=[99, amd.intermediate.serial_number], this_update=this_update)

    def run(crl: bytes):
        verifier = SnpVerifier(crls={"Genoa": crl})
        return verifier.verify(evidence, exact_policy("genoa_v5"), now=vector.now)

    assert run(clean).ok, run(clean).reasons
    result = run(revoking)
    assert codes(result) == {FailureCode.CERTIFICATE_REVOKED}
    assert "SEV-Genoa" in result.failures[0].message


def test_it_never_goes_to_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the verifier tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)

    assert codes(verify("milan_v5", None, require_crl=True)) == {FailureCode.CRL_MISSING}
    assert verify("milan_v5", {"Milan": read(MILAN_CRL)}, require_crl=True).ok
