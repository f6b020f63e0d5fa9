"""The nonce and TLS key binding, and parsing the agent's `/attestation` reply."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from inference.attestation import (
    AgentReplyError,
    Evidence,
    TeeType,
    VerificationResult,
    check_binding,
    parse_agent_reply,
    report_data_for,
    verify_evidence,
)

from .conftest import MILAN_MEASUREMENT, NOW, read, snp_auxblob

NONCE = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
KEY_DER = b"0Y0\x13\x06\x07*\x86H\xce=\x02\x01" + b"\x42" * 65


def test_report_data_is_sha512_of_nonce_then_key():
    assert report_data_for(NONCE, KEY_DER) == hashlib.sha512(NONCE + KEY_DER).digest()
    assert len(report_data_for(NONCE, KEY_DER)) == 64


def test_report_data_built_from_nonce_and_key_binds_them():
    claims = {"report_data": report_data_for(NONCE, KEY_DER).hex()}

    assert check_binding(claims, NONCE, KEY_DER)


def test_an_altered_nonce_or_key_does_not_bind():
    claims = {"report_data": report_data_for(NONCE, KEY_DER).hex()}

    assert not check_binding(claims, NONCE[:-1] + b"\x00", KEY_DER)
    assert not check_binding(claims, NONCE, KEY_DER[:-1] + b"\x00")
    assert not check_binding(claims, KEY_DER, NONCE)
    assert not check_binding({}, NONCE, KEY_DER)
    assert not check_binding({"report_data": "é"}, NONCE, KEY_DER)


def test_a_failed_result_binds_nothing():
    claims = {"report_data": report_data_for(NONCE, KEY_DER).hex()}
    passed = VerificationResult(TeeType.SEV_SNP, ok=True, claims=claims)
    failed = VerificationResult(TeeType.SEV_SNP, ok=False, claims=claims)

    assert check_binding(passed, NONCE, KEY_DER)
    assert not check_binding(failed, NONCE, KEY_DER)


def test_a_genuine_report_binds_only_its_own_report_data():
    result = verify_evidence(
        TeeType.SEV_SNP,
        Evidence(TeeType.SEV_SNP, read("snp/milan_report.bin"), snp_auxblob("milan_vcek.der")),
        {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any"},
        now=NOW,
    )

    assert result.ok
    assert not check_binding(result, NONCE, KEY_DER)


def test_the_policy_can_require_the_binding():
    policy = {
        "measurements": [MILAN_MEASUREMENT],
        "min_tcb": "any",
        "report_data": report_data_for(NONCE, KEY_DER).hex(),
    }
    evidence = Evidence(
        TeeType.SEV_SNP, read("snp/milan_report.bin"), snp_auxblob("milan_vcek.der")
    )

    result = verify_evidence(TeeType.SEV_SNP, evidence, policy, now=NOW)

    assert [failure.code for failure in result.failures] == ["report_data_mismatch"]


def agent_reply(**changes) -> dict:
    report = read("snp/milan_report.bin")
    reply = {
        "provider": "sev-snp",
        "confidential": True,
        "nonce": NONCE.hex(),
        "report_data": report[0x50:0x90].hex(),
        "tls_public_key": base64.b64encode(KEY_DER).decode(),
        "evidence": base64.b64encode(report).decode(),
        "auxblob": base64.b64encode(snp_auxblob("milan_vcek.der")).decode(),
        "generated_at": "2025-07-01T00:00:00+00:00",
    }
    reply.update(changes)
    return reply


def test_it_parses_an_snp_reply_into_verifiable_evidence():
    reply = parse_agent_reply(json.dumps(agent_reply()))

    assert reply.evidence.tee_type == TeeType.SEV_SNP
    assert reply.nonce == NONCE
    assert reply.tls_public_key == KEY_DER
    assert reply.generated_at == NOW
    result = verify_evidence(
        TeeType.SEV_SNP,
        reply.evidence,
        {"measurements": [MILAN_MEASUREMENT], "min_tcb": "any"},
        now=NOW,
    )
    assert result.ok, result.reasons


def test_it_parses_the_development_agents_reply():
    report_data = report_data_for(NONCE, KEY_DER)
    reply = parse_agent_reply(
        agent_reply(
            provider="none",
            confidential=False,
            report_data=report_data.hex(),
            evidence=None,
            auxblob=None,
        )
    )

    assert reply.evidence == Evidence(TeeType.NONE, report_data)
    result = verify_evidence(TeeType.NONE, reply.evidence, {"allow_insecure": True}, now=NOW)
    assert result.ok
    assert result.claims["confidential"] is False
    assert check_binding(result, NONCE, KEY_DER)


@pytest.mark.parametrize(
    ("provider", "tee_type"),
    [("none", TeeType.NONE), ("sev-snp", TeeType.SEV_SNP), ("tdx", TeeType.TDX)],
)
def test_provider_names_map_to_tee_types(provider, tee_type):
    assert TeeType.from_provider(provider) == tee_type
    assert tee_type.provider == provider


@pytest.mark.parametrize(
    "changes",
    [
        {"provider": "sgx"},
        {"confidential": False},
        {"provider": "none"},
        {"nonce": "not hex"},
        {"report_data": "00" * 10},
        {"evidence": "***"},
        {"evidence": None},
        {"auxblob": "not base64!"},
        {"tls_public_key": 42},
        {"generated_at": "2025-07-01T00:00:00"},
        {"generated_at": "yesterday"},
        {"nonce": "00" * (1 << 21)},
    ],
)
def test_it_rejects_a_malformed_reply(changes):
    with pytest.raises(AgentReplyError):
        parse_agent_reply(agent_reply(**changes))


@pytest.mark.parametrize("text", ["", "[]", "null", "{", '{"provider": "tdx"}', b"\xff"])
def test_it_rejects_a_reply_that_is_not_the_right_json(text):
    with pytest.raises(AgentReplyError):
        parse_agent_reply(text)
