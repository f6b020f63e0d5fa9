"""Shared fixtures: the compiled default pipeline and sample entities for every detector."""

import pytest

from guardrails import DEFAULT_POLICY, compile_policy
from guardrails.pipeline import Pipeline

# One valid example of every entity the output detectors mask, with its placeholder.
# The cube PAT carries a correct CRC32 (computed with tokens.keys' algorithm).
ENTITIES = {
    "email": ("jane.doe@example.com", "[EMAIL]"),
    "phone_us": ("(415) 555-2671", "[PHONE]"),
    "phone_intl": ("+44 20 7946 0958", "[PHONE]"),
    "card": ("4111 1111 1111 1111", "[CARD]"),
    "iban": ("DE89 3704 0044 0532 0130 00", "[IBAN]"),
    "iban_compact": ("GB82WEST12345698765432", "[IBAN]"),
    "ssn": ("123-45-6789", "[NATIONAL_ID]"),
    "cpf": ("390.533.447-05", "[NATIONAL_ID]"),
    "ipv4": ("8.8.4.4", "[IP]"),
    "ipv6": ("2001:4860:4860::8888", "[IP]"),
    "aws": ("AKIAIOSFODNN7EXAMPLE", "[SECRET]"),
    "github": ("ghp_" + "A1b2C3d4E5" * 3 + "F6g7H8", "[SECRET]"),
    "openai": ("sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8t", "[SECRET]"),
    "slack": ("xoxb-1234567890-abcdefghij", "[SECRET]"),
    "google": ("AIza" + "SyD3v" * 7, "[SECRET]"),
    "stripe": ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "[SECRET]"),
    "jwt": (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "[SECRET]",
    ),
}


def cube_pat() -> str:
    import zlib

    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    body = "cube_pat_" + "K3yId0123A" + "_" + "s3cr3tS3cr3tS3cr3tS3cr3tS3cr3tAB"
    number = zlib.crc32(body.encode())
    digits = []
    for _ in range(6):
        number, digit = divmod(number, 62)
        digits.append(alphabet[digit])
    return body + "".join(reversed(digits))


ENTITIES["cube_pat"] = (cube_pat(), "[SECRET]")


@pytest.fixture
def pipeline() -> Pipeline:
    return compile_policy(DEFAULT_POLICY)
