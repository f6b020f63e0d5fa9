"""Routing as documented in inference/registry.py: the version-stamped snapshot, breakers
with half-open probes, least-busy then round-robin per model, policies compiled once."""

import time

import pytest
from asgiref.sync import async_to_sync

from domains import permissions
from domains.selectors import Actor
from guardrails import services as guardrail_services
from guardrails.models import GuardrailPolicy
from inference import access, health
from inference import registry as registry_module
from inference.models import Backend, Deployment, Model, RegistryVersion, registry_changed
from inference.registry import Breaker, Registry, check_snapshot, load_guardrails, load_snapshot


def deny(term: str) -> dict:
    checks = [{"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"terms": [term]}}]
    return {"description": term, "input": checks}


def admin(user) -> Actor:
    return Actor(user=user, permissions=frozenset(permissions.ALL))


@pytest.fixture
def spread(db):
    model = Model.objects.create(name="spread", tasks=["chat"])
    for name in ("spread-a", "spread-b"):
        backend = Backend.objects.create(
            name=name, base_url="http://127.0.0.1:9/v1", allow_not_confidential=True
        )
        Deployment.objects.create(model=model, backend=backend, upstream_model="u")
    return model


# The version stamp ------------------------------------------------------------------------


def test_nothing_changed_means_no_rebuild(spread):
    snapshot = load_snapshot()
    assert snapshot.version is not None
    assert check_snapshot(snapshot) is None


@pytest.mark.parametrize(
    "change",
    [
        "backend saved",
        "health changed",
        "deployment deleted",
        "access denied",
        "policy activated",
    ],
)
def test_every_change_routing_sees_rebuilds_the_snapshot(spread, domain, alice, change):
    snapshot = load_snapshot()
    backend = Backend.objects.get(name="spread-a")
    if change == "backend saved":
        backend.enabled = False
        backend.save()
    elif change == "health changed":
        # The health check writes with a queryset update, which sends no signal.
        health.backends_check_health()
    elif change == "deployment deleted":
        Deployment.objects.filter(backend=backend).delete()
    elif change == "access denied":
        access.model_access_set(actor=admin(alice), domain=domain, model="spread", allowed=False)
    elif change == "policy activated":
        guardrail_services.policy_save(
            domain=domain, document=deny("falcon"), actor=admin(alice), activate=True
        )
    rebuilt = check_snapshot(snapshot)
    assert rebuilt is not None and rebuilt.version > snapshot.version
    assert check_snapshot(rebuilt) is None


def test_an_unchanged_health_check_does_not_rebuild(spread):
    health.backends_check_health()  # both down: a change
    snapshot = load_snapshot()
    health.backends_check_health()  # still down: no change
    assert check_snapshot(snapshot) is None


def test_an_attestation_expiry_rebuilds_without_a_write(spread):
    snapshot = load_snapshot()
    snapshot.expires = time.monotonic() - 1
    assert check_snapshot(snapshot) is not None


def test_a_recreated_version_row_never_repeats_a_count(spread):
    # Deleted (a flushed table, a restore) then written again: a process still holding a
    # snapshot of version 3 must see the next version as a change, so it starts afresh
    # from the clock, not at 1, 2, 3 again.
    RegistryVersion.objects.filter(pk=1).update(version=3)
    RegistryVersion.objects.all().delete()
    for _ in range(3):
        registry_changed()
    assert RegistryVersion.objects.get(pk=1).version > time.time_ns() - 60 * 10**9


def test_a_missing_version_row_still_rebuilds(spread):
    RegistryVersion.objects.all().delete()
    snapshot = load_snapshot()
    assert snapshot.version is None and check_snapshot(snapshot) is not None


def test_policies_are_compiled_once_per_version(spread, domain, alice):
    guardrail_services.policy_save(
        domain=domain, document=deny("falcon"), actor=admin(alice), activate=True
    )
    first, second = load_guardrails(), load_guardrails()
    assert first[str(domain.pk)] is second[str(domain.pk)]
    assert first[""] is second[""]
    guardrail_services.policy_save(
        domain=domain, document=deny("eagle"), actor=admin(alice), activate=True
    )
    third = load_guardrails()
    assert third[str(domain.pk)] is not first[str(domain.pk)]
    active = GuardrailPolicy.objects.get(domain=domain, active=True)
    assert set(registry_module._compiled) == {"default", active.pk}


def test_a_due_check_never_holds_up_the_request(spread, settings):
    settings.CUBEAI_ROUTING_REFRESH_SECONDS = 0.01
    fresh = Registry()
    fresh.snapshot = load_snapshot()
    before = fresh.snapshot
    time.sleep(0.02)

    async def ask():
        got = await fresh.current()
        # Served the snapshot it had, at once; the check runs beside the request.
        assert got is before and fresh._refreshing is not None
        await fresh._refreshing

    # async_to_sync: the check's database read runs back on this thread, in the test's
    # transaction (as the in-process tests do; see inference/offpath.py).
    async_to_sync(ask)()
    assert fresh.snapshot is before  # nothing changed: not rebuilt


# Breakers -----------------------------------------------------------------------------------


def test_a_breaker_opens_then_lets_exactly_one_probe_through(settings):
    settings.CUBEAI_BREAKER_FAILURES = 3
    settings.CUBEAI_BREAKER_COOLDOWN_SECONDS = 10
    settings.CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT = 30
    breaker = Breaker()
    for _ in range(3):
        assert breaker.take(0)
        breaker.failure(0)
    assert not breaker.allows(5) and not breaker.take(5)  # open
    assert breaker.allows(10)  # half-open
    assert breaker.take(10)  # the probe
    assert not breaker.allows(11) and not breaker.take(11)  # one probe at a time
    breaker.failure(12)  # the probe failed: open again, a full cool-down
    assert not breaker.take(21) and breaker.take(22)
    breaker.success()  # the second probe answered: closed
    assert all(breaker.take(23) for _ in range(5))


def test_an_abandoned_probe_frees_the_way_after_its_timeout(settings):
    settings.CUBEAI_BREAKER_FAILURES = 1
    settings.CUBEAI_BREAKER_COOLDOWN_SECONDS = 10
    settings.CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT = 30
    breaker = Breaker()
    breaker.failure(0)
    assert breaker.take(10)
    # The probe's client went away: no verdict. Another probe only after its timeout.
    assert not breaker.take(39) and breaker.take(40)


def test_a_half_open_backend_gets_one_request_and_recovers_on_success(spread, settings):
    settings.CUBEAI_BREAKER_FAILURES = 1
    settings.CUBEAI_BREAKER_COOLDOWN_SECONDS = 0.2
    fresh = Registry()
    fresh.snapshot = load_snapshot()
    entry = fresh.snapshot.models["spread"]
    a = next(t for t in fresh.snapshot.backends.values() if t.name == "spread-a")
    assert fresh.started(a.id)
    fresh.breaker(a.id).failure(time.monotonic())
    fresh.finished(a.id)
    names = {t.name for t, _ in fresh.candidates(fresh.snapshot, entry)}
    assert names == {"spread-b"}  # open: out of routing
    time.sleep(0.25)
    assert "spread-a" in {t.name for t, _ in fresh.candidates(fresh.snapshot, entry)}
    assert fresh.started(a.id)  # the probe
    assert not fresh.started(a.id)  # a second request may not follow it
    assert "spread-a" not in {t.name for t, _ in fresh.candidates(fresh.snapshot, entry)}
    fresh.breaker(a.id).success()
    fresh.finished(a.id)
    assert fresh.breaker(a.id).state == "closed"
    assert {t.name for t, _ in fresh.candidates(fresh.snapshot, entry)} == {
        "spread-a",
        "spread-b",
    }


# Least busy, then round-robin per model -----------------------------------------------------


def test_round_robin_is_per_model(spread):
    other = Model.objects.create(name="spread-2", tasks=["chat"])
    for backend in Backend.objects.all():
        Deployment.objects.create(model=other, backend=backend, upstream_model="u")
    fresh = Registry()
    fresh.snapshot = load_snapshot()
    one, two = fresh.snapshot.models["spread"], fresh.snapshot.models["spread-2"]
    firsts = {"spread": [], "spread-2": []}
    for _ in range(6):
        # Requests to two models interleaved: each still alternates between its backends
        # (a process-wide turn gave each model the same backend every time).
        for entry in (one, two):
            firsts[entry.name].append(fresh.candidates(fresh.snapshot, entry)[0][0].name)
    for picked in firsts.values():
        assert picked.count("spread-a") == 3 and picked.count("spread-b") == 3


def test_the_least_busy_goes_first(spread):
    fresh = Registry()
    fresh.snapshot = load_snapshot()
    entry = fresh.snapshot.models["spread"]
    a = next(t for t in fresh.snapshot.backends.values() if t.name == "spread-a")
    fresh.started(a.id)
    fresh.started(a.id)
    assert {fresh.candidates(fresh.snapshot, entry)[0][0].name for _ in range(4)} == {"spread-b"}


# Nothing on the request path waits for background work ------------------------------------


def test_an_auth_miss_never_queues_behind_a_slow_flush_or_rebuild(settings):
    """The cause of the old p99: a request's cache miss waited on the one shared sync thread
    while a metering flush or a registry reload held it. On executors of their own, it
    does not; on the shared thread (what the in-process tests use) it would."""
    import asyncio

    from inference import offpath

    def slow_write():
        time.sleep(0.6)

    def auth_miss():
        return "caller"

    async def miss_while_busy() -> float:
        flush = asyncio.ensure_future(offpath.run("metering", slow_write))
        rebuild = asyncio.ensure_future(offpath.run("registry", slow_write))
        await asyncio.sleep(0.05)  # both hold their thread now
        started = time.monotonic()
        assert await offpath.run("auth", auth_miss) == "caller"
        waited = time.monotonic() - started
        await flush
        await rebuild
        return waited

    settings.CUBEAI_OFFPATH_EXECUTORS = True
    assert asyncio.run(miss_while_busy()) < 0.2
    settings.CUBEAI_OFFPATH_EXECUTORS = False
    assert asyncio.run(miss_while_busy()) > 0.4  # queued behind them on the shared thread
