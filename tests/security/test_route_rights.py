"""Token rights hold on every route (finding: the attestation-policy API took `IsAdminUser`,
which accepts personal access tokens, so a staff member's token limited to `models:read`
created a policy with `allow_debug: true`).

This walks every URL pattern of the project — pages, the admin, the management API with its
DRF routers and the OpenAI-compatible API's ninja routes — and asks each one, with every
method it serves, as: a token holding each single scope, a token with every scope, a staff
user's token with every scope, and no credential. What each gets is derived from the route's
rule in `ROUTES`; a route (or a method a DRF view or a ninja path operation serves) missing
from the table fails the test, so a new route cannot be added without saying who may use it.
Every WebSocket route is asked too: a token is no session there.
"""

from __future__ import annotations

import datetime
import inspect
import re
from dataclasses import dataclass, field

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from domains import permissions as p
from domains import services
from domains.models import Membership, User
from tokens import services as token_services

MISSING = 999999  # an id that names nothing: an allowed caller gets 404, nothing changes


@dataclass(frozen=True)
class Rule:
    """Who may call a route with one method, and the status a caller who may gets.

    kind: "scoped" — a token acting in the domain, holding one of `scopes` (any token of a
    member when empty); "session" — a signed-in browser only, never a token; "staff" —
    platform staff signed in, never a token; "page" — an HTML page (tokens do not sign in);
    "public" — anyone, the same answer.
    """

    kind: str
    ok: int
    scopes: frozenset[str] = frozenset()
    body: dict | None = None
    multipart: bool = False


def scoped(ok: int, *scopes: str, **kw) -> Rule:
    return Rule("scoped", ok, frozenset(scopes), **kw)


def member(ok: int, **kw) -> Rule:
    return Rule("scoped", ok, **kw)


def session(ok: int = 0, **kw) -> Rule:
    return Rule("session", ok, **kw)


def staff(ok: int = 0, **kw) -> Rule:
    return Rule("staff", ok, **kw)


PAGE = Rule("page", 302)


def public(ok: int) -> Rule:
    return Rule("public", ok)


CHAT = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
AUDIO = {"model": "nope"}
READ_GUARDRAILS = (p.AUDIT_READ, p.DOMAIN_MANAGE)
AUDIO_RIGHTS = (p.AUDIO_TRANSCRIPTIONS, p.AUDIO_TRANSLATIONS)

# Pages need a browser session; a token is no sign-in, so it gets the sign-in redirect.
PAGES = (
    "profile/tokens/",
    "profile/tokens/new/",
    "profile/tokens/<id:pk>/secret/",
    "profile/tokens/<id:pk>/rotate/",
    "profile/tokens/<id:pk>/revoke/",
    "profile/tokens/<id:pk>/delete/",
    "profile/tokens/<id:pk>/usage/",
    "profile/tokens/<id:pk>/usage/export.csv",
    "domains/",
    "domains/<uuid:domain_id>/",
    "domains/<uuid:domain_id>/models/",
    "domains/<uuid:domain_id>/models/set/",
    "domains/<uuid:domain_id>/chat/",
    "domains/<uuid:domain_id>/usage/",
    "domains/<uuid:domain_id>/usage/export.csv",
    "domains/<uuid:domain_id>/audit/requests/",
    "domains/<uuid:domain_id>/audit/requests/export.csv",
    "domains/<uuid:domain_id>/attestation/",
    "domains/<uuid:domain_id>/attestation/<id:backend_id>/evidence.json",
    "domains/<uuid:domain_id>/settings/",
    "domains/<uuid:domain_id>/settings/status/",
    "domains/<uuid:domain_id>/settings/delete/",
    "domains/<uuid:domain_id>/members/",
    "domains/<uuid:domain_id>/members/<id:user_id>/role/",
    "domains/<uuid:domain_id>/members/<id:user_id>/remove/",
    "domains/<uuid:domain_id>/roles/",
    "domains/<uuid:domain_id>/roles/<id:role_id>/",
    "domains/<uuid:domain_id>/roles/<id:role_id>/delete/",
    "domains/<uuid:domain_id>/invitations/",
    "domains/<uuid:domain_id>/invitations/<id:invitation_id>/revoke/",
    "domains/<uuid:domain_id>/invitations/<id:invitation_id>/resend/",
    "domains/<uuid:domain_id>/audit/",
    "domains/<uuid:domain_id>/limits/",
    "domains/<uuid:domain_id>/audit/export.csv",
    "invitations/",
    "invitations/<id:invitation_id>/accept/",
    "invitations/<id:invitation_id>/decline/",
    "domains/<uuid:domain_id>/guardrails/",
    "domains/<uuid:domain_id>/guardrails/versions/<id:version>/activate/",
    "domains/<uuid:domain_id>/transcriptions/",
    "domains/<uuid:domain_id>/transcriptions/<uuid:job_id>/result.<str:fmt>",
    "domains/<uuid:domain_id>/transcriptions/<uuid:job_id>/cancel/",
)

# Route pattern -> {method: rule}. Paths are filled with the cast's domain and MISSING ids.
ROUTES: dict[str, dict[str, Rule]] = {
    "": {"GET": public(302)},
    "healthz": {"GET": public(200)},
    "readyz": {"GET": public(200)},
    # Prometheus: off (404) unless CUBEAI_METRICS_TOKEN or allowed networks are set.
    "metrics": {"GET": public(404)},
    # The OpenAI-compatible API; every other path under /proxy/ is its 404.
    "^proxy/?$": {"GET": public(404), "POST": public(404)},
    "proxy/": {"GET": public(404)},
    "^proxy/(?P<rest>(?s:.*))$": {"GET": public(404), "OPTIONS": public(404), "TRACE": public(404)},
    "proxy/openapi.json": {"GET": public(200)},
    "proxy/docs": {"GET": public(200)},
    "proxy/<domain_id>/v1/chat/completions": {
        "POST": scoped(404, p.CHAT, body=CHAT),
        "GET": public(405),
        "OPTIONS": public(405),
        "HEAD": public(405),
        "TRACE": public(405),
    },
    "proxy/<domain_id>/v1/completions": {
        "POST": scoped(404, p.COMPLETIONS, body={"model": "nope", "prompt": "hi"}),
        "GET": public(405),
    },
    "proxy/<domain_id>/v1/embeddings": {
        "POST": scoped(404, p.EMBEDDINGS, body={"model": "nope", "input": "hi"}),
        "DELETE": public(405),
    },
    "proxy/<domain_id>/v1/audio/transcriptions": {
        "POST": scoped(404, p.AUDIO_TRANSCRIPTIONS, body=AUDIO, multipart=True),
        "GET": public(405),
    },
    "proxy/<domain_id>/v1/audio/translations": {
        "POST": scoped(404, p.AUDIO_TRANSLATIONS, body=AUDIO, multipart=True),
        "GET": public(405),
    },
    # Transcription jobs (a Cube AI extension): creating one needs the right of its task;
    # following and cancelling one's own jobs, either audio right.
    "proxy/<domain_id>/v1/audio/transcriptions/jobs": {
        "POST": scoped(404, p.AUDIO_TRANSCRIPTIONS, body=AUDIO, multipart=True),
        "GET": scoped(200, *AUDIO_RIGHTS),
        "PUT": public(405),
    },
    "proxy/<domain_id>/v1/audio/transcriptions/jobs/<job_id>": {
        "GET": scoped(404, *AUDIO_RIGHTS),
        "DELETE": scoped(404, *AUDIO_RIGHTS),
        "POST": public(405),
    },
    "proxy/<domain_id>/v1/audio/transcriptions/jobs/<job_id>/result": {
        "GET": scoped(404, *AUDIO_RIGHTS),
        "POST": public(405),
    },
    "proxy/<domain_id>/v1/models": {"GET": scoped(200, p.MODELS_READ), "POST": public(405)},
    "proxy/<domain_id>/v1/models/<path:model>": {
        "GET": scoped(404, p.MODELS_READ),
        "DELETE": public(405),
    },
    "proxy/<domain_id>/v1/<path:rest>": {"GET": public(404), "POST": public(404)},
    "proxy/<domain_id>/attestation": {
        "POST": scoped(200, p.ATTESTATION_READ, body={"nonce": "ab" * 32}),
        "GET": public(405),
        "OPTIONS": public(405),
    },
    "proxy/<domain_id>/attestation/policy": {
        "GET": scoped(200, p.ATTESTATION_READ),
        "POST": public(405),
    },
    # The management API.
    "api/schema/": {"GET": public(200)},
    "^api/(?P<rest>(?s:.+))/$": {"GET": public(404), "POST": public(404)},
    "api/docs/": {"GET": public(200)},
    "api/registry/^backends/$": {"GET": staff(), "POST": staff(body={})},
    "api/registry/^backends/(?P<pk>[^/.]+)/$": {
        "GET": staff(),
        "PUT": staff(body={}),
        "PATCH": staff(body={}),
        "DELETE": staff(),
    },
    "api/registry/^models/$": {"GET": staff(), "POST": staff(body={})},
    "api/registry/^models/(?P<pk>[^/.]+)/$": {
        "GET": staff(),
        "PUT": staff(body={}),
        "PATCH": staff(body={}),
        "DELETE": staff(),
    },
    "api/registry/^deployments/$": {"GET": staff(), "POST": staff(body={})},
    "api/registry/^deployments/(?P<pk>[^/.]+)/$": {
        "GET": staff(),
        "PUT": staff(body={}),
        "PATCH": staff(body={}),
        "DELETE": staff(),
    },
    "api/backends/<path:name>/attestation/policy/": {
        "GET": staff(),
        "POST": staff(body={"document": {"allow_debug": True}}),
    },
    "api/domains/<uuid:domain_id>/models/": {
        "GET": scoped(200, p.MODELS_READ),
        "POST": scoped(400, p.DOMAIN_MANAGE, body={}),
    },
    "api/domains/<uuid:domain_id>/usage/": {"GET": scoped(200, p.USAGE_READ)},
    "api/domains/<uuid:domain_id>/usage/export/": {"GET": scoped(200, p.USAGE_READ)},
    "api/domains/<uuid:domain_id>/audit/requests/": {"GET": scoped(200, p.AUDIT_READ)},
    "api/domains/": {"GET": member(200), "POST": session(body={})},
    "api/domains/<uuid:domain_id>/": {
        "GET": member(200),
        "PATCH": scoped(400, p.DOMAIN_MANAGE, body={"name": ""}),
        # A token holding domain:manage may delete the domain: the rule is asked with an
        # unknown domain below (404 for everyone), so the cast's domain survives the walk.
        "DELETE": scoped(404, p.DOMAIN_MANAGE),
    },
    "api/domains/<uuid:domain_id>/members/": {
        "GET": scoped(200, p.MEMBERS_MANAGE),
        "POST": scoped(400, p.MEMBERS_MANAGE, body={}),
    },
    "api/domains/<uuid:domain_id>/members/<id:user_id>/": {
        "GET": scoped(404, p.MEMBERS_MANAGE),
        "PATCH": scoped(404, p.MEMBERS_MANAGE, body={}),
        "DELETE": scoped(404, p.MEMBERS_MANAGE),
    },
    "api/domains/<uuid:domain_id>/roles/": {
        "GET": scoped(200, p.MEMBERS_MANAGE),
        "POST": scoped(400, p.MEMBERS_MANAGE, body={}),
    },
    "api/domains/<uuid:domain_id>/roles/<id:role_id>/": {
        "GET": scoped(404, p.MEMBERS_MANAGE),
        "PATCH": scoped(404, p.MEMBERS_MANAGE, body={}),
        "DELETE": scoped(404, p.MEMBERS_MANAGE),
    },
    "api/domains/<uuid:domain_id>/invitations/": {
        "GET": scoped(200, p.MEMBERS_MANAGE),
        "POST": scoped(400, p.MEMBERS_MANAGE, body={}),
    },
    "api/domains/<uuid:domain_id>/invitations/<id:invitation_id>/": {
        "GET": scoped(404, p.MEMBERS_MANAGE),
        "DELETE": scoped(404, p.MEMBERS_MANAGE),
    },
    "api/domains/<uuid:domain_id>/invitations/<id:invitation_id>/resend/": {
        "POST": scoped(404, p.MEMBERS_MANAGE, body={})
    },
    "api/domains/<uuid:domain_id>/audit/": {"GET": scoped(200, p.AUDIT_READ)},
    "api/domains/<uuid:domain_id>/limits/": {
        "GET": scoped(200, p.USAGE_READ),
        "PATCH": scoped(400, p.DOMAIN_MANAGE, body={"requests_per_minute": 0}),
    },
    "api/domains/<uuid:domain_id>/limits/tokens/": {"GET": scoped(200, p.USAGE_READ)},
    "api/domains/<uuid:domain_id>/limits/tokens/<id:token_id>/": {
        "GET": scoped(404, p.USAGE_READ),
        "PUT": scoped(400, p.DOMAIN_MANAGE, body={}),
        "DELETE": scoped(204, p.DOMAIN_MANAGE),
    },
    "api/invitations/": {"GET": session()},
    "api/invitations/accept/": {"POST": session(body={})},
    "api/invitations/decline/": {"POST": session(body={})},
    "api/tokens/": {"GET": session(), "POST": session(body={})},
    "api/tokens/<id:pk>/": {"GET": session(), "DELETE": session()},
    "api/tokens/<id:pk>/rotate/": {"POST": session(body={})},
    "api/tokens/<id:pk>/revoke/": {"POST": session(body={})},
    "api/tokens/<id:pk>/usage/": {"GET": session()},
    "api/domains/<uuid:domain_id>/guardrails/": {
        "GET": scoped(200, *READ_GUARDRAILS),
        "POST": scoped(400, p.DOMAIN_MANAGE, body={}),
    },
    "api/domains/<uuid:domain_id>/guardrails/versions/<id:version>/": {
        "GET": scoped(404, *READ_GUARDRAILS)
    },
    "api/domains/<uuid:domain_id>/guardrails/versions/<id:version>/activate/": {
        "POST": scoped(404, p.DOMAIN_MANAGE, body={})
    },
    "signup/": {"GET": public(200)},
    "signin/": {"GET": public(200)},
    "signout/": {"POST": public(302)},
    "invitations/link/<str:token>/": {"GET": public(302)},
    **{route: {"GET": PAGE, "POST": PAGE} for route in PAGES},
}

# The Django admin: staff signed in through its own login page; a token never gets in.
# Every admin route redirects to the admin's login page, except that page itself and the
# logout (which, signed out, goes back to the admin's index and from there to the login).
ADMIN_OPEN = {"admin/login/": (200, ""), "admin/logout/": (302, "/admin/")}
ADMIN_VALUES = {"app_label": "domains", "url": "nope/", "object_id": "1", "id": "1"}

# The path of an unknown domain, for the one call that would delete the cast's domain.
UNKNOWN_DOMAIN_CALLS = {("api/domains/<uuid:domain_id>/", "DELETE")}


def walk(patterns=None, prefix: str = ""):
    """Every URL pattern of the project: (route as written, the pattern)."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def fill(route: str, values: dict[str, str]) -> str:
    """A concrete path for a route, with `values` for its parameters."""
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: values[m.group(1)], route)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], path)
    return "/" + path.replace("^", "").replace("$", "").replace("?", "")


def drf_methods(pattern: URLPattern) -> set[str] | None:
    """The methods a DRF view serves (None for other views): checked against the table."""
    callback = pattern.callback
    if getattr(callback, "actions", None):
        # HEAD is answered as GET.
        return {method.upper() for method in callback.actions} - {"HEAD"}
    view_class = getattr(callback, "cls", None)
    if view_class is None:
        return None
    return {m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)}


# The views that serve no method of their own: OpenAI's 405 for the other methods on a known
# path, and the 404 of an unknown path under a domain's /v1/.
REFUSING_VIEWS = {"not_allowed", "not_allowed_model", "not_allowed_job", "unknown_route"}


def ninja_methods(pattern: URLPattern) -> tuple[set[str], set[str]] | None:
    """The methods a ninja route serves with a view of its own, and those it refuses (405/404)
    (None for other views). Ninja routes every method of a path to one `PathView`, which
    holds the path's operations; the view function closes over it."""
    from ninja.operation import PathView

    callback = pattern.callback
    if not inspect.isfunction(callback):
        return None
    path_view = inspect.getclosurevars(callback).nonlocals.get("self")
    if not isinstance(path_view, PathView):
        return None
    served, refused = set(), set()
    for operation in path_view.operations:
        refusing = operation.view_func.__name__ in REFUSING_VIEWS
        (refused if refusing else served).update(operation.methods)
    return served, refused


def is_refusal(rule: Rule) -> bool:
    return rule.kind == "public" and rule.ok in (404, 405)


@dataclass
class Cast:
    domain_id: str
    tokens: dict[str, str | None] = field(default_factory=dict)
    scopes: dict[str, frozenset[str]] = field(default_factory=dict)


@pytest.fixture
def cast(db) -> Cast:
    owner = User.objects.create_user("walk-owner@example.com", "pw-walk-123456")
    operator = User.objects.create_user("walk-staff@example.com", "pw-walk-123456")
    operator.is_staff = operator.is_superuser = True
    operator.save()
    domain = services.domain_create(creator=owner, name="Walk", route="walk")
    Membership.objects.create(
        user=operator, domain=domain, role=services.role_builtin(name=p.ADMIN)
    )
    expires = timezone.now() + datetime.timedelta(days=1)

    def issue(user, scopes, domains):
        return token_services.token_issue(
            owner=user, name="walk", scopes=sorted(scopes), expires_at=expires, domains=domains
        )[1]

    cast = Cast(domain_id=str(domain.pk))
    for scope in p.ALL:
        cast.tokens[scope] = issue(owner, [scope], [domain])
        cast.scopes[scope] = frozenset({scope})
    cast.tokens["every scope"] = issue(owner, p.ALL, [domain])
    cast.scopes["every scope"] = frozenset(p.ALL)
    cast.tokens["staff user's token"] = issue(operator, p.ALL, None)
    cast.scopes["staff user's token"] = frozenset(p.ALL)
    cast.tokens["no credential"] = None
    cast.scopes["no credential"] = frozenset()
    return cast


def expected(rule: Rule, credential: str, scopes: frozenset[str]) -> int:
    if rule.kind == "public":
        return rule.ok
    if rule.kind == "page":
        return 302
    if credential == "no credential":
        return 401
    if rule.kind in ("session", "staff"):
        return 403
    if not rule.scopes or rule.scopes & scopes:
        return rule.ok
    return 403


def ask(client, method: str, path: str, rule: Rule, token: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if rule.multipart:
        data = {**(rule.body or {}), "file": SimpleUploadedFile("a.wav", b"RIFF....WAVE")}
        return client.generic(method, path, **_multipart(data), **headers)
    if rule.body is not None:
        return client.generic(
            method, path, data=_json(rule.body), content_type="application/json", **headers
        )
    return client.generic(method, path, **headers)


def _json(body: dict) -> str:
    import json

    return json.dumps(body)


def _multipart(data: dict) -> dict:
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    return {"data": encode_multipart(BOUNDARY, data), "content_type": MULTIPART_CONTENT}


def test_every_route_has_a_rule_for_every_method_it_serves():
    walked = {route: pattern for route, pattern in walk() if not route.startswith("admin/")}
    assert sorted(set(walked) - set(ROUTES)) == [], "routes without a rule in ROUTES"
    assert sorted(set(ROUTES) - set(walked)) == [], "rules for routes that no longer exist"
    for route, pattern in walked.items():
        methods = drf_methods(pattern)
        if methods is not None:
            assert methods == set(ROUTES[route]), f"{route}: methods served vs. rules"


def test_every_ninja_route_serves_exactly_the_methods_its_rules_name():
    # The table's methods of the OpenAI-compatible API are those its path operations serve:
    # a method added to an operation cannot go without a rule, nor a rule outlive its method.
    checked = 0
    for route, pattern in walk():
        methods = ninja_methods(pattern)
        if methods is None:
            continue
        served, refused = methods
        rules = ROUTES[route]
        assert served == {m for m, rule in rules.items() if not is_refusal(rule)}, route
        assert not served & refused, route
        # What the table asks as a refusal is one of the path's refusing views.
        assert {m for m, rule in rules.items() if is_refusal(rule)} <= refused, route
        checked += 1
    assert checked >= 15


def test_what_each_credential_gets_on_every_route(client, cast, settings):
    # This is about rights, not rates: the limiter counts in process memory here, since
    # Django's test client runs each async request on an event loop of its own, and the
    # limiter's Redis client belongs to the loop that made it.
    settings.REDIS_URL = ""
    settings.CUBEAI_RATE_LIMIT_TOKEN_RPM = settings.CUBEAI_RATE_LIMIT_DOMAIN_RPM = 10**6
    settings.CUBEAI_ATTESTATION_CLIENT_TOKEN_RPM = 10**6
    settings.CUBEAI_ATTESTATION_CLIENT_DOMAIN_RPM = 10**6
    values = {
        "domain_id": cast.domain_id,
        "model": "nope",
        "rest": "nope",
        "name": "nope",
        "token": "nope",
        "job_id": "00000000-0000-4000-8000-000000000001",
        "fmt": "txt",
        **dict.fromkeys(
            ["pk", "user_id", "role_id", "invitation_id", "version", "backend_id", "token_id"],
            str(MISSING),
        ),
    }
    unknown_domain = {**values, "domain_id": "00000000-0000-4000-8000-000000000000"}
    wrong = []
    for route, rules in ROUTES.items():
        for method, rule in rules.items():
            path_values = unknown_domain if (route, method) in UNKNOWN_DOMAIN_CALLS else values
            path = fill(route, path_values)
            for credential, token in cast.tokens.items():
                want = expected(rule, credential, cast.scopes[credential])
                if (route, method) in UNKNOWN_DOMAIN_CALLS and want == 403:
                    want = 404  # an unknown domain is a 404 whatever the rights
                got = ask(client, method, path, rule, token)
                if got.status_code != want:
                    wrong.append(f"{method} {path} as {credential}: {got.status_code}, not {want}")
                elif want == 302 and rule.kind == "page":
                    assert got["Location"].startswith("/signin/"), (method, path)
    assert wrong == []


def test_the_admin_lets_no_token_in(client, cast):
    values = {**ADMIN_VALUES, "content_type_id": "1"}
    checked = 0
    for route, _ in walk():
        if not route.startswith("admin/"):
            continue
        path = fill(route, values)
        for credential, token in cast.tokens.items():
            headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
            response = client.get(path, **headers)
            status, location = ADMIN_OPEN.get(route, (302, "/admin/login/"))
            assert response.status_code == status, (path, credential, response.status_code)
            assert response.get("Location", "").startswith(location), (path, credential)
            checked += 1
    assert checked > 100


def test_a_staff_members_token_cannot_change_an_attestation_policy(client, cast):
    from inference.models import AttestationPolicy, Backend

    Backend.objects.create(name="gpu", base_url="https://gpu.example/v1", tee_type="sev-snp")
    staff_token = cast.tokens["staff user's token"]
    response = client.post(
        "/api/backends/gpu/attestation/policy/",
        {"document": {"measurements": ["ab" * 48], "allow_debug": True}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {staff_token}",
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "Only platform staff, signed in, can do this."
    assert not AttestationPolicy.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_no_websocket_route_takes_a_token_instead_of_a_session():
    # Every WebSocket route serves signed-in browsers only: a token with every scope, of the
    # domain's owner, is refused at the handshake; the owner's session is let in.
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.conf import settings as django_settings
    from django.test import Client

    from cubeai.asgi import application
    from cubeai.routing import websocket_urlpatterns

    def make() -> tuple[str, str, str]:
        owner = User.objects.create_user("ws-owner@example.com", "pw-walk-123456")
        domain = services.domain_create(creator=owner, name="Sockets", route="sockets")
        token = token_services.token_issue(
            owner=owner,
            name="ws",
            scopes=sorted(p.ALL),
            expires_at=timezone.now() + datetime.timedelta(days=1),
            domains=[domain],
        )[1]
        browser = Client()
        browser.force_login(owner)
        return str(domain.pk), token, browser.cookies[django_settings.SESSION_COOKIE_NAME].value

    domain_id, token, cookie = await sync_to_async(make)()
    base = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    session = (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode())
    checked = []
    for pattern in websocket_urlpatterns:
        path = fill(str(pattern.pattern), {"domain_id": domain_id})
        bearer = WebsocketCommunicator(
            application, path, headers=[*base, (b"authorization", f"Bearer {token}".encode())]
        )
        connected, code = await bearer.connect()
        assert not connected and code in (4401, 4404), (path, code)
        browser = WebsocketCommunicator(application, path, headers=[*base, session])
        assert (await browser.connect())[0], path
        await browser.disconnect()
        checked.append(path)
    assert len(checked) == len(websocket_urlpatterns) >= 2
