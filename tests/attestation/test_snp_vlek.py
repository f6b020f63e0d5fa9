"""VLEK on Genoa and Turin: AMD's published ASVK chains are pinned, and the VLEK code path
runs end to end.

No genuine Genoa or Turin report signed with a VLEK is public yet, so the chains are
checked against AMD's published certificates (`data/snp-v5/chains/`) and the code path
with `amd_fake.FakeAmd`, which signs a genuine report's bytes again with a stand-in VLEK.
The genuine VLEK path is covered by the Milan VLEK report (`test_snp.py`).
"""

from __future__ import annotations

import hashlib
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from inference.attestation import Evidence, FailureCode, TeeType, roots, verify_evidence
from inference.attestation.snp import VLEK_GUID, build_cert_table

from .amd_fake import FakeAmd, resign
from .conftest import GENUINE_SNP, exact_policy, read

VECTOR_OF = {"Genoa": "genoa_v5", "Turin": "turin_v5"}


def codes(result) -> set[str]:
    return {failure.code for failure in result.failures}


def published_chain(product: str) -> dict[str, x509.Certificate]:
    data = read(f"snp-v5/chains/{product.lower()}_ask_ark_asvk.pem")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        certificates = x509.load_pem_x509_certificates(data)
    return {
        cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value: cert
        for cert in certificates
    }


def sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_amds_published_asvk_and_ark_are_the_pinned_vlek_chain(product):
    published = published_chain(product)

    chain = roots.amd_chain(f"SEV-VLEK-{product}")

    assert (chain.product, chain.signing_key) == (product, "vlek")
    assert sha256(chain.intermediate) == sha256(published[f"SEV-VLEK-{product}"])
    assert sha256(chain.intermediate) in roots.PINNED_SHA256.values()
    assert sha256(chain.root) == sha256(published[f"ARK-{product}"])
    assert chain.root == roots.amd_chain(f"SEV-{product}").root
    chain.intermediate.verify_directly_issued_by(chain.root)


def test_turins_ask_and_ark_are_pinned_as_amd_published_them():
    published = published_chain("Turin")

    chain = roots.amd_chain("SEV-Turin")

    assert sha256(chain.intermediate) == sha256(published["SEV-Turin"])
    assert sha256(chain.root) == sha256(published["ARK-Turin"])


def vlek_evidence(amd: FakeAmd, name: str, *, tcb: dict[str, int] | None = None) -> Evidence:
    vector = GENUINE_SNP[name]
    leaf, key = amd.leaf(tcb or vector.reported_tcb)
    report = resign(read(vector.report), key, signing_key="vlek")
    auxblob = build_cert_table({VLEK_GUID: leaf.public_bytes(Encoding.DER)})
    return Evidence(TeeType.SEV_SNP, report, auxblob)


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_a_vlek_signed_report_verifies_on_genoa_and_turin(product, monkeypatch):
    amd = FakeAmd(product, "vlek")
    amd.install(monkeypatch)
    name = VECTOR_OF[product]

    result = verify_evidence(
        TeeType.SEV_SNP,
        vlek_evidence(amd, name),
        exact_policy(name),
        now=GENUINE_SNP[name].now,
    )

    assert result.ok, result.reasons
    assert result.claims["signing_key"] == "vlek"
    assert result.claims["product"] == product
    assert result.claims["csp_id"] == "csp.example"
    assert result.claims["chip_id"] == "00" * 64


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_a_policy_that_trusts_only_vceks_refuses_the_vlek(product, monkeypatch):
    amd = FakeAmd(product, "vlek")
    amd.install(monkeypatch)
    name = VECTOR_OF[product]

    result = verify_evidence(
        TeeType.SEV_SNP,
        vlek_evidence(amd, name),
        exact_policy(name, signing_keys=["vcek"]),
        now=GENUINE_SNP[name].now,
    )

    assert codes(result) == {FailureCode.SIGNING_KEY_NOT_ALLOWED}


def test_a_turin_vlek_must_certify_the_fmc_of_the_report(monkeypatch):
    amd = FakeAmd("Turin", "vlek")
    amd.install(monkeypatch)
    tcb = {**GENUINE_SNP["turin_v5"].reported_tcb, "fmc": 2}

    result = verify_evidence(
        TeeType.SEV_SNP,
        vlek_evidence(amd, "turin_v5", tcb=tcb),
        exact_policy("turin_v5"),
        now=GENUINE_SNP["turin_v5"].now,
    )

    assert codes(result) == {FailureCode.CERTIFICATE_TCB_MISMATCH}


def test_a_genoa_vlek_cannot_endorse_a_turin_report(monkeypatch):
    amd = FakeAmd("Genoa", "vlek")
    amd.install(monkeypatch)
    vector = GENUINE_SNP["turin_v5"]
    leaf, key = amd.leaf({"bootloader": 1, "tee": 1, "snp": 4, "microcode": 81})
    report = resign(read(vector.report), key, signing_key="vlek")
    evidence = Evidence(
        TeeType.SEV_SNP, report, build_cert_table({VLEK_GUID: leaf.public_bytes(Encoding.DER)})
    )

    result = verify_evidence(TeeType.SEV_SNP, evidence, exact_policy("turin_v5"), now=vector.now)

    assert FailureCode.PRODUCT_MISMATCH in codes(result)
