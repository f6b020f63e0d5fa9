"""Saving, versioning and activating guardrail policies, and which policy is in force."""

import pytest

from cubeai.exceptions import DomainError, NotFound, PermissionDenied
from domains import permissions
from domains.models import AuditEvent
from domains.selectors import Actor
from guardrails import DEFAULT_POLICY
from guardrails.models import GuardrailPolicy
from guardrails.services import (
    PolicyInvalid,
    policy_activate,
    policy_active,
    policy_save,
)

DENY = {
    "description": "no falcon",
    "input": [
        {"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"terms": ["project falcon"]}}
    ],
}


def admin_of(user):
    return Actor(user=user, permissions=frozenset(permissions.ALL))


def viewer_of(user):
    return Actor(user=user, permissions=permissions.BUILTIN_ROLES[permissions.VIEWER])


def test_each_save_is_a_new_version_and_activation_switches_atomically(domain, alice):
    first = policy_save(domain=domain, document=DENY, actor=admin_of(alice))
    second = policy_save(
        domain=domain, document={**DENY, "description": "v2"}, actor=admin_of(alice)
    )
    first.refresh_from_db()
    assert (first.version, second.version) == (1, 2)
    assert not first.active and second.active
    assert second.created_by == alice
    # The saved document states every option, with the version it was saved as.
    assert second.document["version"] == 2
    assert "terms" in second.document["input"][0]["OPTIONS"]
    assert policy_active(domain=domain).description == "v2"


def test_a_version_saved_without_activation_leaves_the_active_one(domain, alice):
    policy_save(domain=domain, document=DENY, actor=admin_of(alice))
    draft = policy_save(domain=domain, document={}, actor=admin_of(alice), activate=False)
    assert not draft.active
    assert policy_active(domain=domain).description == "no falcon"
    policy_activate(domain=domain, version=draft.version, actor=admin_of(alice))
    assert GuardrailPolicy.objects.get(domain=domain, active=True).version == 2


def test_rolling_back_activates_an_older_version(domain, alice):
    policy_save(domain=domain, document=DENY, actor=admin_of(alice))
    policy_save(domain=domain, document={}, actor=admin_of(alice))
    policy_activate(domain=domain, version=1, actor=admin_of(alice))
    assert policy_active(domain=domain).description == "no falcon"
    assert GuardrailPolicy.objects.filter(domain=domain, active=True).count() == 1


def test_an_invalid_policy_is_refused_with_field_errors_and_nothing_written(domain, alice):
    bad = {
        "input": [
            {"NAME": "guardrails.checks.pii.PII", "OPTIONS": {"email": "explode"}},
            {"NAME": "os.system"},
        ],
        "stream": {"window": 1},
    }
    with pytest.raises(PolicyInvalid) as caught:
        policy_save(domain=domain, document=bad, actor=admin_of(alice))
    assert isinstance(caught.value, DomainError) and caught.value.status == 400
    fields = {error["field"] for error in caught.value.field_errors}
    assert fields == {"input.0.OPTIONS.email", "input.1.NAME", "stream.window"}
    assert all(key.startswith("document.") for key in caught.value.errors)
    assert not GuardrailPolicy.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="guardrails.").exists()


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "(a|ab)*c", r"(\w+\s?)*$", r"(.*)\1"],
)
def test_catastrophic_regexes_are_refused_when_saved(domain, alice, pattern):
    document = {
        "input": [
            {"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"regexes": [pattern]}}
        ]
    }
    with pytest.raises(PolicyInvalid) as caught:
        policy_save(domain=domain, document=document, actor=admin_of(alice))
    assert any("regexes" in error["field"] for error in caught.value.field_errors)
    assert not GuardrailPolicy.objects.exists()


def test_an_invalid_stored_version_cannot_be_activated(domain, alice):
    policy_save(domain=domain, document=DENY, actor=admin_of(alice))
    # Written around the services (an old release, a raw SQL fix): never put in force.
    GuardrailPolicy.objects.create(
        domain=domain, version=2, document={"input": [{"NAME": "nope.Nope"}]}
    )
    with pytest.raises(PolicyInvalid):
        policy_activate(domain=domain, version=2, actor=admin_of(alice))
    assert GuardrailPolicy.objects.get(domain=domain, active=True).version == 1


def test_json_text_and_non_objects_are_refused(domain, alice):
    with pytest.raises(PolicyInvalid):
        policy_save(domain=domain, document="{not json", actor=admin_of(alice))
    with pytest.raises(PolicyInvalid):
        policy_save(domain=domain, document=["a"], actor=admin_of(alice))
    row = policy_save(domain=domain, document='{"description": "text"}', actor=admin_of(alice))
    assert row.document["description"] == "text"


def test_a_member_without_domain_manage_cannot_save_or_activate(domain, alice, bob):
    policy_save(domain=domain, document=DENY, actor=admin_of(alice))
    with pytest.raises(PermissionDenied):
        policy_save(domain=domain, document=DENY, actor=viewer_of(bob))
    with pytest.raises(PermissionDenied):
        policy_activate(domain=domain, version=1, actor=viewer_of(bob))


def test_only_staff_change_the_platform_default(alice, db):
    with pytest.raises(PermissionDenied):
        policy_save(domain=None, document=DENY, actor=admin_of(alice))
    alice.is_staff = True
    row = policy_save(domain=None, document=DENY, actor=Actor.staff(alice))
    assert row.domain is None and row.active


def test_the_policy_in_force_falls_back_to_the_platform_row_then_the_builtin(domain, alice):
    assert policy_active(domain=domain) == DEFAULT_POLICY
    alice.is_staff = True
    policy_save(domain=None, document={"description": "platform"}, actor=Actor.staff(alice))
    assert policy_active(domain=domain).description == "platform"
    policy_save(domain=domain, document=DENY, actor=admin_of(alice))
    assert policy_active(domain=domain).description == "no falcon"


def test_activating_an_unknown_version_is_not_found(domain, alice):
    with pytest.raises(NotFound):
        policy_activate(domain=domain, version=9, actor=admin_of(alice))


def test_changes_are_audited_without_term_lists(domain, alice):
    policy_save(domain=domain, document=DENY, actor=admin_of(alice))
    policy_save(domain=domain, document={}, actor=admin_of(alice), activate=False)
    policy_activate(domain=domain, version=2, actor=admin_of(alice))
    events = list(
        AuditEvent.objects.filter(domain=domain, action__startswith="guardrails.").order_by("id")
    )
    assert [e.action for e in events] == [
        "guardrails.save",
        "guardrails.save",
        "guardrails.activate",
    ]
    assert events[0].details["input"] == ["DenyList"] and events[0].details["activated"]
    assert events[2].details["previous_active"] == 1
    assert "falcon" not in str([e.details for e in events])


def test_the_gateway_snapshot_compiles_what_is_saved(domain, alice):
    from inference.registry import load_guardrails

    policy_save(domain=domain, document=DENY, actor=admin_of(alice))
    pipeline = load_guardrails()[str(domain.pk)]
    decision = pipeline.check_input([{"role": "user", "content": "about Project Falcon"}])
    assert decision.blocked and "deny.term" in decision.violation_types
