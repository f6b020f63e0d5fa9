"""The audit log viewer: administrative actions recorded where they happen, filterable by
actor, action, days and outcome, exportable as CSV; per-request records without any text;
another domain's entries never visible."""

import csv
import datetime
import io

import pytest
from django.utils import timezone

from domains import permissions, services
from domains.models import AuditEvent, Membership
from guardrails.services import policy_save
from inference import metering
from inference.models import Model
from tests.domains.conftest import admin_actor
from tokens import services as token_services
from tokens.models import Token

pytestmark = pytest.mark.django_db


def actions(domain) -> list[str]:
    return list(
        AuditEvent.objects.filter(domain=domain)
        .order_by("created_at", "id")
        .values_list("action", flat=True)
    )


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_token_lifecycle_is_recorded_in_each_domain_the_token_may_act_in(
    alice, domain, other_domain, charlie, pat
):
    pat(alice, name="laptop", domains=[domain])
    token = Token.objects.get(name="laptop")
    secret = token_services.token_rotate(token=token, grace_seconds=60)
    token_services.token_revoke(token=token)
    token_services.token_revoke(token=token)  # already revoked: nothing more to say
    assert [a for a in actions(domain) if a.startswith("token.")] == [
        "token.issue",
        "token.rotate",
        "token.revoke",
    ]
    event = AuditEvent.objects.get(domain=domain, action="token.issue")
    assert event.actor == alice and event.target == "laptop"
    assert event.details["token"] == token.pk and event.details["key_id"] == token.key_id
    # Never the secret, nor its digest.
    dumped = str(list(AuditEvent.objects.values("target", "details")))
    assert secret not in dumped and token.digest not in dumped
    assert secret.split("_")[-1][:20] not in dumped
    # A token restricted to alice's domain says nothing in charlie's.
    assert not AuditEvent.objects.filter(domain=other_domain, action__startswith="token.")


def test_a_token_for_every_domain_is_recorded_in_all_of_them(alice, domain, charlie, pat):
    second = services.domain_create(creator=alice, name="Second", route="alice-second")
    pat(alice, name="everywhere")
    token_services.token_delete(token=Token.objects.get(name="everywhere"))
    for where in (domain, second):
        assert [a for a in actions(where) if a.startswith("token.")] == [
            "token.issue",
            "token.delete",
        ]


def test_member_and_policy_changes_are_recorded(alice, bob, charlie, domain):
    actor = admin_actor(alice)
    services.member_add(
        actor=actor,
        domain=domain,
        email=charlie.email,
        role=services.role_builtin(name=permissions.VIEWER),
    )
    membership = Membership.objects.get(domain=domain, user=charlie)
    services.member_change_role(
        actor=actor,
        domain=domain,
        membership=membership,
        role=services.role_builtin(name=permissions.MEMBER),
    )
    services.member_remove(actor=actor, domain=domain, membership=membership)
    policy_save(domain=domain, actor=actor, document={"input": [], "output": []})
    assert actions(domain)[-4:] == ["member.add", "member.role", "member.remove", "guardrails.save"]


@pytest.fixture
def history(alice, bob, domain, other_domain, charlie, pat):
    pat(alice, name="laptop")
    services.member_change_role(
        actor=admin_actor(alice),
        domain=domain,
        membership=Membership.objects.get(domain=domain, user=bob),
        role=services.role_builtin(name=permissions.MEMBER),
    )
    old = AuditEvent.objects.get(domain=domain, action="member.role")
    old.created_at = timezone.now() - datetime.timedelta(days=10)
    old.save()
    AuditEvent.objects.create(
        domain=domain, action="backend.attestation_failed", target="gpu-1", details={}
    )
    AuditEvent.objects.create(domain=other_domain, actor=charlie, action="token.issue", target="x")


def test_the_viewer_filters_by_actor_action_days_and_outcome(client, alice, domain, history):
    client.force_login(alice)
    url = f"/domains/{domain.pk}/audit/"

    def shown(query: str) -> set[str]:
        page = client.get(f"{url}?{query}").content.decode()
        return {a for a in ("token.issue", "member.role", "backend.attestation_failed",
                            "domain.create") if f"<code>{a}</code>" in page}  # fmt: skip

    assert shown("") == {"token.issue", "member.role", "backend.attestation_failed",
                         "domain.create"}  # fmt: skip
    assert shown("actor=alice%40example.com") == {"token.issue", "member.role", "domain.create"}
    assert shown("action=token.issue") == {"token.issue"}
    assert shown("action=member.") == {"member.role"}
    assert shown("outcome=failure") == {"backend.attestation_failed"}
    since = (timezone.localdate() - datetime.timedelta(days=2)).isoformat()
    assert "member.role" not in shown(f"start={since}")
    bad = client.get(f"{url}?start=2026-02-01&end=2026-01-01")
    assert bad.status_code == 400
    assert "The last day must not be before the first." in bad.content.decode()


def test_the_csv_export_holds_the_filtered_events(client, alice, domain, history):
    client.force_login(alice)
    response = client.get(f"/domains/{domain.pk}/audit/export.csv?action=token.")
    assert response["Content-Type"] == "text/csv"
    rows = csv_rows(response)
    assert [(r["action"], r["target"], r["actor"]) for r in rows] == [
        ("token.issue", "laptop", "alice@example.com")
    ]
    assert '"key_id"' in rows[0]["details"]


def test_the_api_filters_and_pages_and_never_shows_another_domain(
    api, alice, charlie, domain, other_domain, history
):
    api.force_authenticate(alice)
    body = api.get(f"/api/domains/{domain.pk}/audit/?action=token.&limit=10").json()
    assert body["count"] == 1
    assert [(e["action"], e["target"]) for e in body["results"]] == [("token.issue", "laptop")]
    everything = api.get(f"/api/domains/{domain.pk}/audit/?limit=500").json()["results"]
    assert all(e["target"] != "x" for e in everything)
    bad = api.get(f"/api/domains/{domain.pk}/audit/?outcome=maybe")
    assert bad.status_code == 400 and "outcome" in bad.json()
    assert api.get(f"/api/domains/{other_domain.pk}/audit/").status_code == 404


def test_the_schema_documents_the_audit_list_as_paginated(api):
    schema = api.get("/api/schema/?format=json").json()
    get = schema["paths"]["/api/domains/{domain_id}/audit/"]["get"]
    ref = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("PaginatedAuditEventOutList")
    component = schema["components"]["schemas"]["PaginatedAuditEventOutList"]
    assert {"count", "next", "previous", "results"} <= set(component["properties"])
    assert {p["name"] for p in get["parameters"]} >= {"actor", "action", "start", "end",
                                                      "outcome", "limit", "offset"}  # fmt: skip
    requests = schema["paths"]["/api/domains/{domain_id}/audit/requests/"]["get"]
    assert "PaginatedRequestRecordOutList" in str(requests["responses"]["200"])


# Per-request records ---------------------------------------------------------------------


def record(domain, user, **fields):
    event = dict(
        domain_id=domain.pk,
        user_id=user.pk,
        token_id=None,
        request_id="req_x",
        endpoint="chat.completions",
        model="chat-a",
        backend="gpu-1",
        status=200,
        prompt_tokens=3,
        completion_tokens=4,
        total_tokens=7,
        latency_ms=42.0,
        guardrails={"input": {"action": "allow"}},
        attestation="verified",
        created_at=timezone.now(),
    )
    event.update(fields)
    metering.write([event])


@pytest.fixture
def requests_made(alice, bob, charlie, domain, other_domain, pat):
    Model.objects.create(name="chat-a", tasks=["chat"])
    pat(alice, name="laptop")
    laptop = Token.objects.get(name="laptop")
    record(domain, alice, token_id=laptop.pk, request_id="req_ok")
    record(
        domain,
        alice,
        token_id=laptop.pk,
        request_id="req_blocked",
        status=400,
        guardrails={"input": {"action": "block", "violations": [{"type": "pii.email"}]}},
    )
    record(domain, bob, request_id="req_fuzz", model="a#s\u2026", status=404, backend="")
    record(domain, alice, request_id="req_masked", guardrails={"output": [{"action": "mask"}]})
    record(other_domain, charlie, request_id="req_charlie")


def test_request_records_show_who_token_model_backend_outcome_without_text(
    client, alice, domain, requests_made
):
    client.force_login(alice)
    page = client.get(f"/domains/{domain.pk}/audit/requests/").content.decode()
    for request_id in ("req_ok", "req_blocked", "req_fuzz", "req_masked"):
        assert f"<code>{request_id}</code>" in page
    assert "<td>laptop</td>" in page
    assert "<td>blocked</td>" in page and "<td>masked</td>" in page
    assert "<em>unknown model</em>" in page and "a#s" not in page
    assert "<td>verified</td>" in page and "<td>gpu-1</td>" in page
    assert "req_charlie" not in page and "charlie@example.com" not in page


def test_request_records_filter_and_export(client, alice, domain, requests_made):
    client.force_login(alice)
    base = f"/domains/{domain.pk}/audit/requests/export.csv"

    def ids(query: str) -> list[str]:
        return sorted(row["request_id"] for row in csv_rows(client.get(f"{base}?{query}")))

    assert ids("") == ["req_blocked", "req_fuzz", "req_masked", "req_ok"]
    assert ids("outcome=blocked") == ["req_blocked"]
    assert ids("outcome=error") == ["req_blocked", "req_fuzz"]
    assert ids("outcome=success") == ["req_masked", "req_ok"]
    assert ids("actor=bob%40example.com") == ["req_fuzz"]
    assert ids("token=laptop") == ["req_blocked", "req_ok"]
    assert ids("model=unknown+model") == ["req_fuzz"]
    assert ids("model=chat-a") == ["req_blocked", "req_masked", "req_ok"]
    rows = {row["request_id"]: row for row in csv_rows(client.get(base))}
    assert rows["req_fuzz"]["model"] == "unknown model"
    assert rows["req_blocked"]["guardrails"] == "blocked"
    assert rows["req_ok"]["token"] == "laptop"
    assert set(rows["req_ok"]) == {
        "created_at", "request_id", "actor", "token", "endpoint", "model", "backend",
        "status", "guardrails", "attestation", "latency_ms", "total_tokens",
    }  # fmt: skip


def test_request_records_from_the_api(api, alice, bob, domain, other_domain, requests_made):
    api.force_authenticate(alice)
    body = api.get(f"/api/domains/{domain.pk}/audit/requests/?outcome=error&limit=1").json()
    assert body["count"] == 2 and len(body["results"]) == 1
    assert body["results"][0]["request_id"] in {"req_blocked", "req_fuzz"}
    assert api.get(f"/api/domains/{other_domain.pk}/audit/requests/").status_code == 404
    api.force_authenticate(bob)  # a viewer: no audit:read
    assert api.get(f"/api/domains/{domain.pk}/audit/requests/").status_code == 403
