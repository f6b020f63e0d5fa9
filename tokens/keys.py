"""The personal access token format, its checksum and the digest kept at rest.

A token reads `cube_pat_<keyid>_<secret><crc>`: a 10-character key id for the lookup, a
32-character secret (about 190 bits from `secrets`) and a 6-character CRC32 of everything
before it, all base62 so the whole token is URL-safe and selected by one double-click.
Secret scanners recognise the prefix, and a typo or junk fails the checksum before any
database look-up. At rest only HMAC-SHA256(pepper, keyid ‖ secret) is kept, with the id of
the pepper, so peppers can rotate.
"""

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "cube_pat_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LENGTH = 10
SECRET_LENGTH = 32
CRC_LENGTH = 6
TOKEN_RE = re.compile(
    rf"^{PREFIX}([0-9A-Za-z]{{{KEY_ID_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})"
    rf"([0-9A-Za-z]{{{CRC_LENGTH}}})$"
)
# For secret scanners (tokens/README.md); tests/guardrails checks the guardrails catch real tokens.
TOKEN_PATTERN = (
    rf"{PREFIX}[0-9A-Za-z]{{{KEY_ID_LENGTH}}}_[0-9A-Za-z]{{{SECRET_LENGTH + CRC_LENGTH}}}"
)


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token that passed the format and checksum checks."""

    key_id: str
    secret: str


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CRC_LENGTH)


def generate() -> tuple[str, ParsedToken]:
    """Make a new token; returns the full string (shown once) and its parts."""
    parsed = ParsedToken(_random_base62(KEY_ID_LENGTH), _random_base62(SECRET_LENGTH))
    return compose(parsed), parsed


def compose(parsed: ParsedToken) -> str:
    body = f"{PREFIX}{parsed.key_id}_{parsed.secret}"
    return body + _checksum(body)


def parse(token: str) -> ParsedToken | None:
    """Check the format and checksum without touching the database."""
    match = TOKEN_RE.match(token)
    if match is None:
        return None
    key_id, secret, crc = match.groups()
    if not hmac.compare_digest(_checksum(f"{PREFIX}{key_id}_{secret}"), crc):
        return None
    return ParsedToken(key_id, secret)


def peppers() -> dict[str, bytes]:
    """The configured peppers by id; the last one listed signs new tokens."""
    configured = settings.CUBEAI_TOKEN_PEPPERS
    if not configured:
        raise ImproperlyConfigured("CUBEAI_TOKEN_PEPPERS is empty.")
    return configured


def current_pepper_id() -> str:
    return list(peppers())[-1]


def digest(parsed: ParsedToken, pepper_id: str) -> str:
    """HMAC-SHA256 of the key id and secret under one pepper, as hex."""
    pepper = peppers().get(pepper_id)
    if pepper is None:
        # A retired pepper: no stored digest can match, but spend the same time.
        pepper = b"\0" * 32
    message = f"{parsed.key_id}:{parsed.secret}".encode()
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def matches(parsed: ParsedToken, pepper_id: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(parsed, pepper_id), stored_digest)
