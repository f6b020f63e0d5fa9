"""The model registry: the operator's YAML file, the staff API, per-domain access, health."""

import textwrap
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from inference import access, health
from inference.models import Backend, Deployment, Model, ModelAccess
from inference.registry import Registry, load_snapshot

FILE = textwrap.dedent(
    """
    backends:
      - name: gpu-1
        base_url: http://127.0.0.1:9/v1
        kind: vllm
        tee_type: sev-snp
      - name: dev
        base_url: http://127.0.0.1:9/v1
        tee_type: none
        allow_not_confidential: true
    models:
      - name: big-chat
        tasks: [chat, completion]
        context_length: 8192
        capabilities: [tools]
        deployments:
          - {backend: gpu-1, upstream_model: org/big-chat}
          - {backend: dev, upstream_model: small}
      - name: private-embed
        tasks: [embedding]
        public: false
        deployments:
          - {backend: dev, upstream_model: embed}
        domains: [alice-labs]
    """
)


def apply(tmp_path, text: str, *flags: str) -> str:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_backends", str(path), *flags, stdout=out)
    return out.getvalue()


def test_it_applies_the_file_idempotently(db, domain, tmp_path):
    first = apply(tmp_path, FILE)
    assert "create backend gpu-1" in first and "create model big-chat" in first
    assert Deployment.objects.count() == 3
    assert ModelAccess.objects.get(model__name="private-embed").domain == domain
    assert apply(tmp_path, FILE).strip() == "no changes"
    changed = apply(tmp_path, FILE.replace("context_length: 8192", "context_length: 4096"))
    assert "update model big-chat: context_length" in changed


def test_dry_run_shows_changes_and_writes_nothing(db, domain, tmp_path):
    out = apply(tmp_path, FILE, "--dry-run")
    assert "would create backend gpu-1" in out
    assert not Backend.objects.exists() and not Model.objects.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backends: [{name: x}]", "backends.0.base_url"),
        ("models: [{name: m, tasks: [dance]}]", "models.0.tasks.0"),
        ("models: [{name: m, tasks: [chat], deployments: [{backend: nope, upstream_model: u}]}]",
         "unknown backend 'nope'"),
        ("models: [{name: m, tasks: [chat], domains: [nowhere]}]", "unknown domain 'nowhere'"),
        ("backends: [{name: x, base_url: 'http://localhost/v1', surprise: 1}]", "surprise"),
        ("backends: [{name: x, base_url: 'http://localhost/v1'", "not valid YAML"),
        ("backends: [{name: x, base_url: 'http://localhost/v1', tee_type: none}]",
         "allow_not_confidential"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_with_its_location_and_nothing_written(db, tmp_path, text, message):
    with pytest.raises(CommandError, match=message):
        apply(tmp_path, text)
    assert not Backend.objects.exists() and not Model.objects.exists()


def test_domains_see_public_models_minus_denials_plus_grants(db, domain, other_domain, tmp_path):
    apply(tmp_path, FILE)
    ModelAccess.objects.create(
        domain=other_domain, model=Model.objects.get(name="big-chat"), allowed=False
    )
    snapshot = load_snapshot()
    mine = {m.name for m in snapshot.models_for(str(domain.pk))}
    theirs = {m.name for m in snapshot.models_for(str(other_domain.pk))}
    assert mine == {"big-chat", "private-embed"}
    assert theirs == set()
    assert {m.name for m in access.models_for_domain(domain)} == mine


def test_only_attested_or_explicitly_insecure_backends_are_routable(db, domain, tmp_path):
    apply(tmp_path, FILE)
    snapshot = load_snapshot()
    by_name = {t.name: t for t in snapshot.backends.values()}
    assert by_name["gpu-1"].routable is False  # SEV-SNP, not attested yet
    assert by_name["dev"].routable is True
    assert by_name["dev"].attestation == "not-confidential"


def test_the_health_check_marks_a_dead_backend_down(db, domain, tmp_path):
    apply(tmp_path, FILE)
    results = health.backends_check_health()
    assert results == {"gpu-1": False, "dev": False}
    dev = Backend.objects.get(name="dev")
    assert dev.healthy is False and dev.health_error and dev.health_checked_at
    assert load_snapshot().backends[dev.pk].routable is False


class TestRegistryAPI:
    def test_staff_can_manage_the_registry(self, client, db, alice):
        alice.is_staff = True
        alice.save()
        client.force_login(alice)
        response = client.post(
            "/api/registry/backends/",
            {"name": "b1", "base_url": "http://127.0.0.1:9/v1", "kind": "vllm", "tee_type": "tdx"},
            content_type="application/json",
        )
        assert response.status_code == 201, response.json()
        response = client.post(
            "/api/registry/models/",
            {"name": "m1", "tasks": ["chat"]},
            content_type="application/json",
        )
        assert response.status_code == 201
        response = client.post(
            "/api/registry/deployments/",
            {"model": "m1", "backend": "b1", "upstream_model": "u"},
            content_type="application/json",
        )
        assert response.status_code == 201
        assert client.get("/api/registry/deployments/").json()[0]["backend"] == "b1"

    def test_invalid_rows_get_field_errors(self, client, db, alice):
        alice.is_staff = True
        alice.save()
        client.force_login(alice)
        response = client.post(
            "/api/registry/models/",
            {"name": "m1", "tasks": ["dance"]},
            content_type="application/json",
        )
        assert response.status_code == 400 and "tasks" in response.json()
        response = client.post(
            "/api/registry/backends/",
            {"name": "b2", "base_url": "http://localhost/v1", "tee_type": "none"},
            content_type="application/json",
        )
        assert response.status_code == 400 and "allow_not_confidential" in response.json()
        assert not Model.objects.exists() and not Backend.objects.exists()

    def test_non_staff_and_tokens_cannot_touch_it(self, client, db, alice, domain, pat):
        client.force_login(alice)
        assert client.get("/api/registry/backends/").status_code == 403
        client.logout()
        token = pat(alice)
        response = client.get("/api/registry/backends/", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 403


# Least-busy routing across refreshes, with the production refresh on ---------------------


@pytest.fixture
def two_backends(db, settings):
    settings.CUBEAI_ROUTING_REFRESH_SECONDS = 2
    model = Model.objects.create(name="spread", tasks=["chat"])
    for name in ("spread-a", "spread-b"):
        backend = Backend.objects.create(
            name=name, base_url="http://127.0.0.1:9/v1", allow_not_confidential=True
        )
        Deployment.objects.create(model=model, backend=backend, upstream_model="u")
    fresh = Registry()
    fresh.snapshot = load_snapshot()
    return fresh


def names(registry: Registry) -> list[str]:
    snapshot = registry.snapshot
    return [target.name for target, _ in registry.candidates(snapshot, snapshot.models["spread"])]


def test_in_flight_counts_survive_a_snapshot_refresh(two_backends):
    registry = two_backends
    first = registry.snapshot.backends
    busy = next(t for t in first.values() if t.name == "spread-a")
    registry.started(busy.id)
    # A refresh while the request is in flight builds new backend objects...
    registry.snapshot = load_snapshot()
    assert registry.snapshot.backends[busy.id] is not first[busy.id]
    # ...and the busy backend still goes last, every time.
    assert {tuple(names(registry)) for _ in range(6)} == {("spread-b", "spread-a")}
    # The request ends after the refresh: the count goes back to zero, not below or above.
    registry.finished(busy.id)
    registry.finished(busy.id)
    assert registry.in_flight[busy.id] == 0
    # Equals again: round-robin between them.
    assert {names(registry)[0] for _ in range(6)} == {"spread-a", "spread-b"}


def test_a_new_backend_does_not_take_all_the_traffic(two_backends):
    registry = two_backends
    for target in registry.snapshot.backends.values():
        registry.started(target.id)
        registry.finished(target.id)
    backend = Backend.objects.create(
        name="spread-c", base_url="http://127.0.0.1:9/v1", allow_not_confidential=True
    )
    Deployment.objects.create(
        model=Model.objects.get(name="spread"), backend=backend, upstream_model="u"
    )
    registry.snapshot = load_snapshot()
    firsts = [names(registry)[0] for _ in range(9)]
    assert {name: firsts.count(name) for name in set(firsts)} == {
        "spread-a": 3,
        "spread-b": 3,
        "spread-c": 3,
    }


def test_a_provisioned_agent_gets_a_generated_credential_once(db, tmp_path):
    text = textwrap.dedent(
        """
        backends:
          - name: tee-agent
            base_url: https://10.0.0.5:8443/v1
            kind: agent
            tee_type: sev-snp
            provision_credential: true
        """
    )
    out = apply(tmp_path, text)
    assert "generate the credential of backend tee-agent" in out
    backend = Backend.objects.get(name="tee-agent")
    first = backend.credential
    assert first and backend.credential_version > 0
    assert apply(tmp_path, text).strip() == "no changes"
    assert Backend.objects.get(name="tee-agent").credential == first


def test_only_an_agent_takes_a_provisioned_credential(db, tmp_path):
    text = "backends: [{name: v, base_url: 'https://v/v1', kind: vllm, tee_type: tdx, provision_credential: true}]"
    with pytest.raises(CommandError, match="provision_credential: Only an agent"):
        apply(tmp_path, text)


def test_the_health_check_asks_an_agent_its_open_probe(db):
    agent = Backend(name="a", base_url="https://10.0.0.5:8443/v1/", kind="agent")
    vllm = Backend(name="v", base_url="https://10.0.0.6/v1", kind="vllm")
    assert health.probe_url(agent) == "https://10.0.0.5:8443/health"
    assert health.probe_url(vllm) == "https://10.0.0.6/v1/models"
