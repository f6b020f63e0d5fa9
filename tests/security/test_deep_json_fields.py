"""JSON given inside a string or a form field, nested deeper than the standard parser
recurses (finding: about 1,000 levels raised RecursionError, not ValueError, so a 500).

Every JSON a user types into a form field or sends as a string is parsed by
`cubeai.jsonbody.loads`, bounded like a request body: refused with a field error, nothing
written.
"""

import pytest
from django.contrib import admin
from django.test import RequestFactory

from cubeai import jsonbody
from domains.models import Domain, User
from guardrails.models import GuardrailPolicy
from inference.models import AttestationPolicy, Backend

# Past Python's recursion limit: the standard parser raised RecursionError here.
DEEP = "[" * 1500 + "]" * 1500


def test_a_deep_policy_string_on_the_guardrails_api_is_a_400(api, alice, domain):
    api.force_authenticate(alice)
    url = f"/api/domains/{domain.pk}/guardrails/"
    response = api.post(url, {"document": DEEP}, format="json")
    assert response.status_code == 400
    assert "The JSON policy is nested too deeply: at most 64 levels" in str(response.json())
    assert not GuardrailPolicy.objects.exists()


def test_a_deep_policy_in_form_input_on_the_guardrails_api_is_a_400(api, alice, domain):
    api.force_authenticate(alice)
    response = api.post(f"/api/domains/{domain.pk}/guardrails/", {"document": DEEP})
    assert response.status_code == 400
    assert response.json() == {
        "document": [
            "The JSON value is nested too deeply: at most 64 levels of objects and arrays."
        ]
    }
    assert not GuardrailPolicy.objects.exists()


def test_a_deep_policy_in_the_guardrails_editor_is_a_field_error(client, alice, domain):
    client.force_login(alice)
    response = client.post(
        f"/domains/{domain.pk}/guardrails/", {"document": DEEP, "activate": "on"}
    )
    assert response.status_code == 400
    assert "The JSON policy is nested too deeply" in response.content.decode()
    assert not GuardrailPolicy.objects.exists()


def test_deep_metadata_in_the_domain_settings_is_a_field_error(client, alice, domain):
    client.force_login(alice)
    response = client.post(f"/domains/{domain.pk}/settings/", {"name": "Renamed", "metadata": DEEP})
    assert response.status_code == 400
    assert "The JSON value is nested too deeply" in response.content.decode()
    domain.refresh_from_db()
    assert domain.name == "Alice Labs" and domain.metadata == {}


def test_a_deep_attestation_policy_in_the_admin_is_a_field_error(client, db):
    client.force_login(User.objects.create_superuser("ops@example.com", "pw-ops-123456"))
    backend = Backend.objects.create(name="gpu-1", base_url="http://gpu-1.invalid/v1")
    response = client.post(
        "/admin/inference/attestationpolicy/add/", {"backend": backend.pk, "document": DEEP}
    )
    assert response.status_code == 200
    assert "The JSON value is nested too deeply" in response.content.decode()
    assert not AttestationPolicy.objects.exists()


@pytest.mark.parametrize(("model", "field"), [(Domain, "metadata"), (Domain, "tags")])
def test_the_admins_json_fields_refuse_deep_json(db, model, field):
    request = RequestFactory().get("/admin/")
    request.user = User.objects.create_superuser("ops@example.com", "pw-ops-123456")
    form_class = admin.site._registry[model].get_form(request)
    assert isinstance(form_class.base_fields[field], jsonbody.JSONFormField)
    form = form_class(data={field: DEEP})
    assert not form.is_valid()
    assert form.errors[field] == [
        "The JSON value is nested too deeply: at most 64 levels of objects and arrays."
    ]
    str(form[field])  # re-rendering what was typed parses it again: no RecursionError
