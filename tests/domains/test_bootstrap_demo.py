"""bootstrap_demo is idempotent, issues a working token and refuses without DEBUG."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from domains.models import Domain, Membership, User
from tokens import services as token_services
from tokens.models import Token


def bootstrap(**options) -> dict:
    out = StringIO()
    call_command("bootstrap_demo", json=True, stdout=out, **options)
    return json.loads(out.getvalue())


@pytest.fixture
def debug_on(settings, tmp_path):
    settings.DEBUG = True
    settings.DATA_DIR = tmp_path


def test_it_creates_the_demo_admin_domain_and_token(db, debug_on):
    result = bootstrap()
    assert set(result) >= {"domain_id", "admin_email", "token"}
    domain = Domain.objects.get(pk=result["domain_id"])
    user = User.objects.get(email=result["admin_email"])
    assert Membership.objects.get(user=user, domain=domain).role.name == "admin"
    assert user.check_password(result["admin_password"])
    principal = token_services.token_authenticate(result["token"])
    assert principal.owner_id == user.pk


def test_it_is_idempotent_and_issues_a_fresh_token_each_time(db, debug_on):
    first = bootstrap()
    second = bootstrap()
    assert first["domain_id"] == second["domain_id"]
    assert first["admin_password"] == second["admin_password"]
    assert first["token"] != second["token"]
    assert User.objects.count() == 1
    assert Domain.objects.count() == 1
    assert Membership.objects.count() == 1
    # The earlier demo token is revoked; only the newest one works.
    assert Token.objects.filter(revoked_at=None).count() == 1
    token_services.token_authenticate(second["token"])


def test_it_refuses_without_debug(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        bootstrap()
    assert not User.objects.exists()


def test_force_runs_it_without_debug(db, settings, tmp_path):
    settings.DEBUG = False
    settings.DATA_DIR = tmp_path
    assert bootstrap(force=True)["domain_id"]
