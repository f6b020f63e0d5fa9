"""The periodic housekeeping: expired tokens forgotten, owners warned of tokens expiring soon."""

import datetime

import pytest
from django.core import mail
from django.core.cache import cache
from django.utils import timezone

from tokens import services, tasks
from tokens.models import Token


def test_it_warns_owners_of_tokens_expiring_within_seven_days_once(alice, domain, pat):
    pat(alice, name="soon", days=2)
    pat(alice, name="later", days=30)
    result = services.tokens_expire_and_warn()
    assert result["warned"] == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert "soon" in message.subject
    assert "cube_pat_" in message.body  # The key id only, as the pages show it.
    assert Token.objects.get(name="soon").expiry_warned_at is not None
    # Run again: no second email for the same token.
    assert services.tokens_expire_and_warn()["warned"] == 0
    assert len(mail.outbox) == 1


def test_the_warning_never_contains_the_secret(alice, domain, pat):
    plaintext = pat(alice, days=1)
    services.tokens_expire_and_warn()
    assert plaintext not in mail.outbox[0].body
    assert plaintext[20:40] not in mail.outbox[0].body


def test_it_neither_warns_about_revoked_tokens_nor_already_expired_ones(alice, domain, pat):
    pat(alice, name="revoked", days=1)
    services.token_revoke(token=Token.objects.get(name="revoked"))
    pat(alice, name="expired", days=1)
    Token.objects.filter(name="expired").update(
        expires_at=timezone.now() - datetime.timedelta(hours=1)
    )
    result = services.tokens_expire_and_warn()
    assert result == {"expired": 1, "warned": 0}
    assert mail.outbox == []


def test_it_forgets_the_cached_record_of_an_expired_token(alice, domain, pat):
    plaintext = pat(alice, days=1)
    services.token_authenticate(plaintext)
    token = Token.objects.get()
    assert cache.get(services._cache_key(token.key_id))
    Token.objects.update(expires_at=timezone.now() - datetime.timedelta(minutes=1))
    services.tokens_expire_and_warn()
    assert cache.get(services._cache_key(token.key_id)) is None
    assert Token.objects.get().status == Token.Status.EXPIRED


def test_the_task_is_scheduled_with_celery_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["tokens-expire-and-warn"]
    assert entry["task"] == tasks.tokens_expire_and_warn.name


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_process_runs_the_task_on_the_test_database(
    celery_worker_process, alice, domain, pat
):
    pat(alice, name="soon", days=2)
    pat(alice, name="later", days=60)
    result = tasks.tokens_expire_and_warn.delay()
    assert result.get(timeout=30) == {"expired": 0, "warned": 1}
    assert Token.objects.get(name="soon").expiry_warned_at is not None
    assert Token.objects.get(name="later").expiry_warned_at is None
