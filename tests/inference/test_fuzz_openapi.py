"""Schemathesis against both OpenAPI documents of the real gateway, with a valid token.

Every operation of `/proxy/openapi.json` and of `/api/schema/`, writes included, is called
with bodies and parameters generated from the document: no 5xx, every status code and
content type documented, every JSON body matching its documented schema (errors in the API's
own envelope, which the documents declare). Short runs in CI, derandomized with a recorded
seed (`FUZZ_SEED`; `FUZZ_EXAMPLES` raises the count for a longer run, 200 under `make soak`).

Reads run in the shared cast's domain. Writes and the attestation paths run as a fuzz-only
owner, with a token holding every scope, each operation in a fresh domain of its own (with a
custom role, a pending invitation and a guardrail version for the fuzzed bodies to reach), so
a destructive call (deleting or disabling the domain, lowering its limits, a blocking
guardrail policy) changes nothing another operation or another test relies on.
"""

import os
import uuid

import httpx
import pytest
import schemathesis
from django.db import transaction
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from domains import permissions, services
from domains.models import Domain, Invitation, Membership, User
from domains.selectors import Actor
from tests.inference.conftest import _token, committed, eventually, retry_locked

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

SEED = int(os.environ.get("FUZZ_SEED", "20261129"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]
FUZZ_OWNER = "e2e-fuzz-owner@example.com"


def operations(document: dict):
    schema = schemathesis.openapi.from_dict(document)
    for result in schema.get_all_operations():
        yield result.ok()


def fuzz(operation, base_url: str, headers: dict, path_parameters: dict) -> set[int]:
    """Run the operation's examples through the checks; the status codes it answered."""
    answered: set[int] = set()

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case):
        # Only the parameters the operation declares: others would be sent as extra ones.
        pinned = {k: v for k, v in path_parameters.items() if f"{{{k}}}" in operation.path}
        case.path_parameters = {**(case.path_parameters or {}), **pinned}
        response = case.call_and_validate(
            base_url=base_url, headers=headers, checks=CHECKS, timeout=30
        )
        answered.add(response.status_code)

    run()
    return answered


class Fuzzer:
    """The fuzz run's own owner and token (every scope, in every domain the owner holds)."""

    def __init__(self, django_db_blocker) -> None:
        self.blocker = django_db_blocker
        self.domains: list[uuid.UUID] = []
        with django_db_blocker.unblock():
            self.owner = User.objects.create_user(FUZZ_OWNER, "pw-fuzz-123456")
            self.domain()  # the token's scopes must be the owner's in some domain first
            self.token = _token(self.owner, permissions.ALL)
            self.token_id = self.owner.tokens.get().pk

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def domain(self) -> dict:
        """A fresh domain of the owner, with something behind each path parameter, and its
        rate limits at the platform's maximum so that 429s do not hide the answers fuzzed."""
        from guardrails import services as guardrails
        from limits import services as limits

        actor = Actor.staff(self.owner)

        def make() -> dict:
            route = f"e2e-fuzz-{uuid.uuid4().hex[:10]}"
            domain = services.domain_create(creator=self.owner, name=route, route=route)
            role = services.role_create(
                actor=actor,
                domain=domain,
                name="fuzz-reader",
                permissions=[permissions.MODELS_READ],
            )
            invitation, _ = services.invitation_send(
                actor=actor,
                domain=domain,
                email="e2e-fuzz-invitee@example.com",
                role=role,
                link_base="http://testserver/",
            )
            version = guardrails.policy_save(
                domain=domain, document={}, actor=actor, activate=False
            )
            limits.domain_limits_set(
                actor=actor,
                domain=domain,
                **{field: limits.maximum(field) for field in limits.RATE_FIELDS},
            )
            self.domains.append(domain.pk)
            return {
                "domain_id": str(domain.pk),
                "user_id": str(self.owner.pk),
                "role_id": str(role.pk),
                "invitation_id": str(invitation.pk),
                "version": str(version.version),
                "token_id": str(getattr(self, "token_id", 0)),
            }

        if not hasattr(self, "token"):
            return make()
        # Inside a test, on a connection of its own: the test's is in a transaction the
        # gateway would neither see nor get past (SQLite's write lock).
        return committed(lambda: retry_locked(make))

    def remove(self) -> None:
        """The fuzz domains (whatever route the fuzzer gave them; their invitations and
        memberships first, as they protect the roles), then the owner with the token."""

        def remove() -> None:
            with transaction.atomic():
                Invitation.objects.filter(domain__in=self.domains).delete()
                Membership.objects.filter(domain__in=self.domains).delete()
                Domain.objects.filter(pk__in=self.domains).delete()
                User.objects.filter(email=FUZZ_OWNER).delete()

        with self.blocker.unblock():
            retry_locked(remove)


@pytest.fixture(scope="module")
def fuzzer(stack, django_db_blocker):
    """Made after the shared cast and removed before it."""
    made = Fuzzer(django_db_blocker)
    yield made
    made.remove()


def test_the_api_document_holds_under_fuzzing(stack, fuzzer):
    document = httpx.get(f"{stack.gateway}/proxy/openapi.json").json()
    headers = {"Authorization": f"Bearer {stack.alice_token}"}
    # Only the domain is fixed (a fuzzed one is a 404, which is tested elsewhere); models
    # named in bodies are fuzzed, and the cast's own are reached through the examples.
    tried: dict[str, set[int]] = {}
    for operation in operations(document):
        if "/attestation" in operation.path:
            # Attestation challenges every backend serving the domain: the fuzzer's own.
            pinned = fuzzer.domain()
            domain_models = f"{stack.gateway}/proxy/{pinned['domain_id']}/v1/models"
            eventually(
                lambda url=domain_models: httpx.get(url, headers=fuzzer.headers).raise_for_status()
            )
            answered = fuzz(operation, stack.gateway, fuzzer.headers, pinned)
        else:
            answered = fuzz(operation, stack.gateway, headers, {"domain_id": str(stack.alpha.pk)})
        tried[f"{operation.method.upper()} {operation.path}"] = answered
    print(f"seed {SEED}, {EXAMPLES} examples an operation:", tried)
    assert "POST /proxy/{domain_id}/v1/chat/completions" in tried
    # A fuzzed challenge is rarely a valid one: the 200 is the attestation suites' to check.
    assert "POST /proxy/{domain_id}/attestation" in tried
    assert 200 in tried["GET /proxy/{domain_id}/attestation/policy"]


def test_the_management_document_holds_under_fuzzing(stack, fuzzer):
    document = httpx.get(
        f"{stack.gateway}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}
    ).json()
    headers = {"Authorization": f"Bearer {stack.alice_token}"}
    tried: dict[str, set[int]] = {}
    for operation in operations(document):
        if operation.method.upper() == "GET":
            answered = fuzz(operation, stack.gateway, headers, {"domain_id": str(stack.alpha.pk)})
        else:
            # Nothing is excluded: a token cannot revoke, rotate or delete tokens, create
            # domains or answer invitations (session only), nor write the registry (staff,
            # signed in), so the fuzzer's credentials outlive every call; what it can destroy
            # (its domain, that domain's limits and policy) is made afresh per operation.
            answered = fuzz(operation, stack.gateway, fuzzer.headers, fuzzer.domain())
        tried[f"{operation.method.upper()} {operation.path}"] = answered
    print(f"seed {SEED}, {EXAMPLES} examples an operation:", tried)
    assert "GET /api/domains/{domain_id}/audit/" in tried
    assert "POST /api/domains/{domain_id}/guardrails/" in tried
    assert 204 in tried["DELETE /api/domains/{domain_id}/"]
