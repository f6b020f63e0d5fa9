"""Bodies of unknown length on the pages' handler too: a chunked JSON body reaches the
management API (DRF reads a request's body only up to its Content-Length)."""

import json

import httpx
import pytest

from domains import permissions
from domains.models import Role

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_chunked_json_body_reaches_the_management_api(live_server_process, alice, domain, pat):
    token = pat(alice, scopes=[permissions.MEMBERS_MANAGE], domains=[domain])
    body = json.dumps({"name": "chunked", "permissions": [permissions.MEMBERS_MANAGE]}).encode()

    def pieces():
        yield body[:10]
        yield body[10:]

    response = httpx.post(
        f"{live_server_process}/api/domains/{domain.pk}/roles/",
        content=pieces(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "chunked"
    role = Role.objects.get(domain=domain, name="chunked")
    assert role.permissions == [permissions.MEMBERS_MANAGE]
