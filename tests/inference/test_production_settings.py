"""The real gateway with production's routing refresh, caches and executors, under load.

Every end-to-end gateway runs with production's settings (a routing check every 2 s, 1 s
auth and token caches, a 10 s breaker cool-down, the off-path executors); this suite checks,
on a gateway of its own with the rate limits lifted, what they must not break under load:
least-busy routing across snapshot rebuilds, a new backend taking its share and not all the
traffic, and revocation, role, access and guardrail policy changes taking effect within the
documented delay while requests keep coming.
"""

import datetime
import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.utils import timezone

from domains import permissions
from domains import services as domain_services
from domains.models import Membership, Role, User
from domains.selectors import Actor
from guardrails.services import policy_save
from inference import access
from inference.models import Backend, Deployment, Model
from tests.inference.conftest import (
    HERE,
    REVOCATION_DELAY,
    ROUTING_DELAY,
    SLACK,
    committed,
    free_port,
    retry_locked,
    start_gateway,
    start_process,
    usage_row,
)
from tokens import services as token_services
from tokens.models import Token

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

METRICS_TOKEN = "prod-metrics-token-0123456789"
# Production's breaker cool-down (cubeai/settings.py, README "Routing and failover").
BREAKER_COOLDOWN = 10


@dataclass
class Prod:
    gateway: str
    token: str
    domain_id: str

    def url(self, path: str) -> str:
        return f"{self.gateway}/proxy/{self.domain_id}/v1/{path}"


@pytest.fixture(scope="module")
def prod(stack, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        # Production's caches and refresh; only the rate limits are lifted, for the load.
        process, url = start_gateway(
            tmp_path_factory.mktemp("prod-gateway"),
            CUBEAI_RATE_LIMIT_TOKEN_RPM="1000000",
            CUBEAI_RATE_LIMIT_DOMAIN_RPM="1000000",
            CUBEAI_METRICS_TOKEN=METRICS_TOKEN,
        )
        fake = Backend.objects.get(name="e2e-fake-ok").base_url
        model = Model.objects.create(name="prod-paced", tasks=["chat"])
        for name in ("e2e-prod-a", "e2e-prod-b"):
            backend = Backend.objects.create(
                name=name, base_url=fake, kind="openai", allow_not_confidential=True
            )
            Deployment.objects.create(model=model, backend=backend, upstream_model="paced")
        Model.objects.create(name="prod-echo", tasks=["chat"]).deployments.create(
            backend=Backend.objects.get(name="e2e-fake-ok"), upstream_model="echo"
        )
    yield Prod(gateway=url, token=stack.alice_token, domain_id=str(stack.alpha.pk))
    from tests.conftest import _stop

    _stop(process)
    with django_db_blocker.unblock():
        Model.objects.filter(name__startswith="prod-").delete()
        Backend.objects.filter(name__startswith="e2e-prod-").delete()


def stream(prod: Prod, model: str, token: str | None = None) -> str:
    """A streamed chat request read to its end; returns its request id."""
    request_id = f"req-prod-{uuid.uuid4().hex[:16]}"
    headers = {"Authorization": f"Bearer {token or prod.token}", "x-request-id": request_id}
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream(
        "POST", prod.url("chat/completions"), headers=headers, json=body, timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.read().rstrip().endswith(b"data: [DONE]")
    return request_id


def backends_of(request_ids: list[str]) -> dict[str, int]:
    served: dict[str, int] = {}
    for request_id in request_ids:
        name = usage_row(request_id)["backend"]
        served[name] = served.get(name, 0) + 1
    return served


def burst(prod: Prod, model: str, count: int) -> list[str]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: stream(prod, model), range(count)))


def committed_write(function):
    """`committed(function)`, tried again while SQLite says another writer holds the lock."""
    return retry_locked(lambda: committed(function))


def registry_write() -> None:
    """A write that routing sees (it bumps the registry version): a rebuild follows."""
    committed(lambda: Backend.objects.get(name="e2e-prod-a").save())


def test_least_busy_routing_holds_across_rebuilds(prod):
    # Eight streams of ~0.6 s each at once: least busy first puts four on each backend.
    first = backends_of(burst(prod, "prod-paced", 8))
    assert set(first) == {"e2e-prod-a", "e2e-prod-b"}
    assert all(3 <= count <= 5 for count in first.values()), first
    # Now rebuild the snapshot while streams are in flight, twice.
    with ThreadPoolExecutor(1) as pool:
        during = pool.submit(burst, prod, "prod-paced", 8)
        registry_write()
        time.sleep(ROUTING_DELAY + 0.5)
        registry_write()
        during.result()
    time.sleep(ROUTING_DELAY + 0.5)
    # Every request counted done against the count it was counted in: still even.
    after = backends_of(burst(prod, "prod-paced", 8))
    assert all(3 <= count <= 5 for count in after.values()), after


def test_a_new_backend_takes_its_share_not_all_the_traffic(prod):
    def add():
        fake = Backend.objects.get(name="e2e-fake-ok").base_url
        backend = Backend.objects.create(
            name="e2e-prod-c", base_url=fake, kind="openai", allow_not_confidential=True
        )
        Deployment.objects.create(
            model=Model.objects.get(name="prod-paced"), backend=backend, upstream_model="paced"
        )

    committed(add)
    time.sleep(ROUTING_DELAY + 0.5)
    served = backends_of(burst(prod, "prod-paced", 9))
    assert set(served) == {"e2e-prod-a", "e2e-prod-b", "e2e-prod-c"}, served
    assert all(2 <= count <= 4 for count in served.values()), served


class Load:
    """Requests in a loop from a few threads, recording (time, status) of each."""

    def __init__(self, request) -> None:
        self.request = request
        self.results: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(4)]

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                self.results.append((sent, self.request(client)))
                time.sleep(0.02)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + 15
        while len(self.results) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def settled(self, status: int, since: float) -> float:
        """Seconds from `since` until every request sent got `status` (the last one sent
        that did not), checking that requests did get it in the end."""
        later = [(at, got) for at, got in self.results if at > since]
        assert later and later[-1][1] == status, sorted({got for _, got in later})
        others = [at for at, got in later if got != status]
        return max(others, default=since) - since


def test_a_revocation_takes_effect_within_its_delay_under_load(prod, stack):
    def issue():
        owner = User.objects.get(email="e2e-alice@example.com")
        expires = timezone.now() + datetime.timedelta(days=1)
        return token_services.token_issue(
            owner=owner, name="prod", scopes=sorted(permissions.ALL), expires_at=expires
        )

    row, token = committed(issue)

    def models(client) -> int:
        return client.get(
            prod.url("models"), headers={"Authorization": f"Bearer {token}"}
        ).status_code

    with Load(models) as load:
        assert {status for _, status in load.results} == {200}
        revoked_at = time.monotonic()
        committed(lambda: token_services.token_revoke(token=Token.objects.get(pk=row.pk)))
        time.sleep(REVOCATION_DELAY + SLACK + 1)
    delay = load.settled(401, revoked_at)
    assert delay <= REVOCATION_DELAY + SLACK, delay


def test_a_role_change_takes_effect_within_its_delay_under_load(prod, stack):
    """A member's role loses the chat permission while they and others chat: their token
    gets 403 within the documented delay (docs/architecture.md: role changes apply within
    about 2 s, the authentication cache plus the token cache), the others keep getting 200."""
    admin = Actor(
        user=committed(lambda: User.objects.get(email="e2e-alice@example.com")),
        permissions=frozenset(permissions.ALL),
    )

    def join():
        user = User.objects.create_user("e2e-dave-prod@example.com", "pw-dave-123456")
        chatter = Role.objects.create(
            domain=stack.alpha,
            name="chatter",
            permissions=[permissions.MODELS_READ, permissions.CHAT],
        )
        Membership.objects.create(user=user, domain=stack.alpha, role=chatter)
        expires = timezone.now() + datetime.timedelta(days=1)
        return token_services.token_issue(
            owner=user,
            name="prod",
            scopes=[permissions.CHAT, permissions.MODELS_READ],
            expires_at=expires,
        )[1]

    dave_token = committed_write(join)

    def chat_as(token: str):
        def chat(client) -> int:
            body = {"model": "prod-echo", "messages": [{"role": "user", "content": "x"}]}
            headers = {"Authorization": f"Bearer {token}"}
            return client.post(prod.url("chat/completions"), json=body, headers=headers).status_code

        return chat

    def demote() -> None:
        membership = Membership.objects.get(user__email="e2e-dave-prod@example.com")
        reader = Role.objects.get(domain=stack.alpha, name="reader")  # no chat permission
        domain_services.member_change_role(
            actor=admin, domain=stack.alpha, membership=membership, role=reader
        )

    with Load(chat_as(dave_token)) as dave, Load(chat_as(prod.token)) as alice:
        assert {status for _, status in dave.results} == {200}
        changed_at = time.monotonic()
        committed_write(demote)
        time.sleep(REVOCATION_DELAY + SLACK + 1)
    delay = dave.settled(403, changed_at)
    assert delay <= REVOCATION_DELAY + SLACK, delay
    assert len(alice.results) > 10 and {status for _, status in alice.results} == {200}


def test_a_model_denial_takes_effect_within_its_delay_under_load(prod, stack):
    def chat(client) -> int:
        body = {"model": "prod-echo", "messages": [{"role": "user", "content": "x"}]}
        headers = {"Authorization": f"Bearer {prod.token}"}
        return client.post(prod.url("chat/completions"), json=body, headers=headers).status_code

    admin = Actor(
        user=committed(lambda: User.objects.get(email="e2e-alice@example.com")),
        permissions=frozenset(permissions.ALL),
    )

    def rule(allowed):
        return committed_write(
            lambda: access.model_access_set(
                actor=admin, domain=stack.alpha, model="prod-echo", allowed=allowed
            )
        )

    try:
        with Load(chat) as load:
            assert {status for _, status in load.results} == {200}
            denied_at = time.monotonic()
            rule(False)
            time.sleep(ROUTING_DELAY + SLACK + 1.5)
        delay = load.settled(404, denied_at)
        assert delay <= ROUTING_DELAY + SLACK, delay
    finally:
        rule(None)
        time.sleep(ROUTING_DELAY + SLACK)  # allowed again for the tests that follow


def test_a_guardrail_policy_takes_effect_within_its_delay_under_load(prod, stack):
    def chat(client) -> int:
        body = {"model": "prod-echo", "messages": [{"role": "user", "content": "project osprey"}]}
        headers = {"Authorization": f"Bearer {prod.token}"}
        return client.post(prod.url("chat/completions"), json=body, headers=headers).status_code

    admin = Actor(
        user=committed(lambda: User.objects.get(email="e2e-alice@example.com")),
        permissions=frozenset(permissions.ALL),
    )
    deny = {"NAME": "guardrails.checks.denylist.DenyList", "OPTIONS": {"terms": ["osprey"]}}
    with Load(chat) as load:
        assert {status for _, status in load.results} == {200}
        saved_at = time.monotonic()
        committed_write(
            lambda: policy_save(
                domain=stack.alpha, document={"description": "osprey", "input": [deny]}, actor=admin
            )
        )
        time.sleep(ROUTING_DELAY + SLACK + 1.5)
    delay = load.settled(400, saved_at)
    assert delay <= ROUTING_DELAY + SLACK, delay


def start_fake(port: int, log: Path):
    """A fake upstream of its own on `port` (one this test can kill and start again)."""
    return start_process(
        [sys.executable, str(HERE / "fake_upstream.py"), str(port)],
        env=dict(os.environ),
        ready_url=f"http://127.0.0.1:{port}/stats",
        log_path=log,
    )


def breaker_open(prod: Prod, backend: str) -> int:
    """`cubeai_breaker_open` for `backend` at the gateway's `/metrics` (0 when not set yet)."""
    response = httpx.get(
        f"{prod.gateway}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    prefix = f'cubeai_breaker_open{{backend="{backend}"}} '
    found = [line for line in response.text.splitlines() if line.startswith(prefix)]
    return int(float(found[0].removeprefix(prefix))) if found else 0


def test_a_killed_backend_gets_traffic_again_after_the_breaker_cool_down(prod, stack, tmp_path):
    """One backend of a two-deployment model is killed under load, then started again on
    the same port: its breaker opens, the other deployment serves meanwhile (no 5xx but the
    502 of a request the dead one had already taken, README "Routing and failover"), and
    once the cool-down has passed a half-open probe closes it and it takes its share again,
    counted at the backend itself."""
    from tests.conftest import _stop

    port = free_port()
    revived = start_fake(port, tmp_path / "first.log")

    def add() -> None:
        backend = Backend.objects.create(
            name="e2e-prod-revive",
            base_url=f"http://127.0.0.1:{port}/v1",
            kind="openai",
            allow_not_confidential=True,
        )
        model = Model.objects.create(name="prod-revive", tasks=["chat"])
        model.deployments.create(backend=backend, upstream_model="echo")
        model.deployments.create(
            backend=Backend.objects.get(name="e2e-fake-ok"), upstream_model="echo"
        )

    committed_write(add)

    def chat(client) -> int:
        body = {"model": "prod-revive", "messages": [{"role": "user", "content": "x"}]}
        headers = {"Authorization": f"Bearer {prod.token}"}
        return client.post(prod.url("chat/completions"), json=body, headers=headers).status_code

    def served_by_revived() -> int:
        return httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()["requests"]

    def wait_for(check, timeout: float) -> float:
        """Seconds until `check()` is true, polled; fails after `timeout`."""
        started = time.monotonic()
        while not check():
            assert time.monotonic() - started < timeout, "not within the deadline"
            time.sleep(0.2)
        return time.monotonic() - started

    # Routed (the model is new: within the routing delay) and taking its share.
    def routed() -> bool:
        with httpx.Client(timeout=30) as client:
            return chat(client) == 200 and served_by_revived() > 0

    wait_for(routed, ROUTING_DELAY + SLACK + 5)
    try:
        with Load(chat) as load:
            wait_for(lambda: served_by_revived() >= 5, 30)
            killed = time.monotonic()  # at most when it died: the bound below holds
            revived.send_signal(signal.SIGKILL)
            revived.wait(timeout=10)
            wait_for(lambda: breaker_open(prod, "e2e-prod-revive") == 1, 30)
            revived = start_fake(port, tmp_path / "second.log")
            restarted = time.monotonic()
            # Out of routing until the cool-down has passed (it began after the kill, so no
            # request may reach the new process sooner, however loaded the machine), then
            # back: a probe, then its share of the load (a few requests, not only the probe).
            wait_for(lambda: served_by_revived() >= 1, BREAKER_COOLDOWN * 2 + SLACK + 5)
            probed = time.monotonic()
            assert probed - killed >= BREAKER_COOLDOWN, probed - killed
            wait_for(lambda: served_by_revived() >= 5, 15)
            back = time.monotonic()
            assert breaker_open(prod, "e2e-prod-revive") == 0
        wrong = [
            (round(at - killed, 2), status)
            for at, status in load.results
            if status != 200 and not (status == 502 and at < killed + 0.5)
        ]
        assert wrong == [], wrong[:10]
        print(
            f"\nbreaker: open {restarted - killed:.1f} s after the kill, probed "
            f"{probed - killed:.1f} s after it, its share again {back - killed:.1f} s after it; "
            f"{len(load.results)} requests"
        )
    finally:
        _stop(revived)
