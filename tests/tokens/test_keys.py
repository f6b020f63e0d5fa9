"""The token format, its checksum, and what is kept at rest."""

import re

import pytest
from django.db import connection
from django.test import override_settings

from cubeai.exceptions import AuthenticationFailed
from tokens import keys, services
from tokens.models import Token

PEPPER_A = "a" * 40
PEPPER_B = "b" * 40


def test_it_generates_tokens_in_the_documented_format():
    plaintext, parsed = keys.generate()
    assert re.fullmatch(r"cube_pat_[0-9A-Za-z]{10}_[0-9A-Za-z]{38}", plaintext)
    assert re.fullmatch(keys.TOKEN_PATTERN, plaintext)
    assert plaintext.startswith(f"cube_pat_{parsed.key_id}_{parsed.secret}")
    assert keys.parse(plaintext) == parsed


def test_it_generates_a_different_token_each_time():
    assert len({keys.generate()[0] for _ in range(100)}) == 100


def test_it_rejects_a_token_whose_checksum_does_not_match():
    plaintext, _ = keys.generate()
    last = plaintext[-1]
    typo = plaintext[:-1] + ("A" if last != "A" else "B")
    assert keys.parse(typo) is None
    # A changed secret character breaks the checksum too.
    secret_at = len("cube_pat_") + 11
    flipped = plaintext[secret_at]
    changed = plaintext[:secret_at] + ("x" if flipped != "x" else "y") + plaintext[secret_at + 1 :]
    assert keys.parse(changed) is None


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "cube_pat_",
        "Bearer x",
        "sk-1234",
        "cube_pat_short_abc",
        "cube_pat_" + "a" * 60,
        "💥" * 30,
    ],
)
def test_it_rejects_junk_without_a_database_hit(junk, django_assert_num_queries, db):
    with django_assert_num_queries(0), pytest.raises(AuthenticationFailed):
        services.token_authenticate(junk)


def test_only_a_digest_is_kept_at_rest(alice, domain, pat):
    plaintext = pat(alice)
    secret = keys.parse(plaintext).secret
    token = Token.objects.get()
    assert token.digest == keys.digest(keys.parse(plaintext), token.pepper_id)
    assert len(token.digest) == 64
    # Dump every row of every table and look for the token and its secret part.
    dumped = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            dumped.extend(str(value) for row in cursor.fetchall() for value in row)
    everything = "\n".join(dumped)
    assert token.key_id in everything
    assert secret not in everything
    assert plaintext not in everything


def test_a_rotated_pepper_still_verifies_old_tokens_and_signs_new_ones(alice, domain, pat):
    with override_settings(CUBEAI_TOKEN_PEPPERS={"a": PEPPER_A.encode()}):
        old = pat(alice, name="old")
    with override_settings(CUBEAI_TOKEN_PEPPERS={"a": PEPPER_A.encode(), "b": PEPPER_B.encode()}):
        new = pat(alice, name="new")
        assert Token.objects.get(name="old").pepper_id == "a"
        assert Token.objects.get(name="new").pepper_id == "b"
        assert services.token_authenticate(old).key_id == keys.parse(old).key_id
        assert services.token_authenticate(new).key_id == keys.parse(new).key_id


def test_a_retired_pepper_no_longer_verifies_its_tokens(alice, domain, pat, settings):
    settings.CUBEAI_TOKEN_PEPPERS = {"a": PEPPER_A.encode()}
    old = pat(alice)
    settings.CUBEAI_TOKEN_PEPPERS = {"b": PEPPER_B.encode()}
    with pytest.raises(AuthenticationFailed):
        services.token_authenticate(old)
