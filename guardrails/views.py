"""The guardrail policy page of a domain: the policy in force, its history and an editor.

Reading needs `audit:read` or `domain:manage`; saving and activating need `domain:manage`.
The views parse the form, call `guardrails.services` and render; `domain_page` resolves
the domain and maps the services' exceptions to 404 and 403.
"""

import json

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from cubeai.exceptions import PermissionDenied
from domains import permissions
from domains.decorators import domain_page
from guardrails import Policy, services
from guardrails.forms import CommonSettingsForm, PolicyForm

READERS = frozenset({permissions.AUDIT_READ, permissions.DOMAIN_MANAGE})


def _checks(policy: Policy) -> list[dict]:
    """The policy as a readable list: stage, check, and its options in one line."""
    rows = []
    for stage, specs in (("input", policy.input), ("output", policy.output)):
        for spec in specs:
            rows.append(
                {
                    "stage": stage,
                    "name": spec.NAME.rsplit(".", 1)[-1],
                    "path": spec.NAME,
                    "options": spec.OPTIONS,
                }
            )
    return rows


def _context(
    request: HttpRequest,
    form: PolicyForm | None = None,
    settings_form: CommonSettingsForm | None = None,
) -> dict:
    domain = request.domain
    row = services.policy_row_active(domain=domain)
    policy = row.policy if row is not None else services.policy_active(domain=domain)
    document = json.dumps(policy.model_dump(mode="json"), indent=2)
    can_manage = permissions.DOMAIN_MANAGE in request.granted
    if form is None and can_manage:
        form = PolicyForm(initial={"document": document, "activate": True})
    if settings_form is None and can_manage:
        settings_form = CommonSettingsForm(
            initial=CommonSettingsForm.initial_from(policy.model_dump(mode="json")),
            prefix="common",
        )
    return {
        "domain": domain,
        "active": row if row is not None and row.domain_id == domain.pk else None,
        "inherited": row is None or row.domain_id is None,
        "platform_row": row if row is not None and row.domain_id is None else None,
        "policy": policy,
        "checks": _checks(policy),
        "document": document,
        "versions": services.policy_versions(domain=domain),
        "form": form,
        "settings_form": settings_form,
        "can_manage": can_manage,
    }


@domain_page()
@require_http_methods(["GET", "POST"])
def policy_page(request: HttpRequest) -> HttpResponse:
    if not READERS & request.granted:
        raise PermissionDenied("This needs the audit:read or domain:manage permission.")
    if request.method == "GET":
        return render(request, "guardrails/policy.html", _context(request))
    if permissions.DOMAIN_MANAGE not in request.granted:
        raise PermissionDenied(f"This needs the {permissions.DOMAIN_MANAGE} permission.")
    if "common-secrets" in request.POST:
        return _save_common_settings(request)
    form = PolicyForm(request.POST)
    if form.is_valid():
        try:
            row = services.policy_save(
                domain=request.domain,
                document=form.cleaned_data["document"],
                actor=request.actor,
                activate=form.cleaned_data["activate"],
            )
        except services.PolicyInvalid as exc:
            form.add_policy_errors(exc.field_errors)
        else:
            state = "saved and activated" if row.active else "saved (not active)"
            messages.success(request, f"Policy version {row.version} {state}.")
            return redirect("guardrails_policy", domain_id=request.domain.pk)
    return render(request, "guardrails/policy.html", _context(request, form), status=400)


def _save_common_settings(request: HttpRequest) -> HttpResponse:
    """The common settings form: written into the policy in force, then saved and validated
    exactly as a JSON document would be."""
    form = CommonSettingsForm(request.POST, prefix="common")
    if form.is_valid():
        current = services.policy_active(domain=request.domain).model_dump(mode="json")
        try:
            row = services.policy_save(
                domain=request.domain,
                document=form.document(current),
                actor=request.actor,
                activate=form.cleaned_data["activate"],
            )
        except services.PolicyInvalid as exc:
            form.add_policy_errors(exc.field_errors)
        else:
            state = "saved and activated" if row.active else "saved (not active)"
            messages.success(request, f"Policy version {row.version} {state}.")
            return redirect("guardrails_policy", domain_id=request.domain.pk)
    return render(
        request, "guardrails/policy.html", _context(request, settings_form=form), status=400
    )


@domain_page(permissions.DOMAIN_MANAGE)
@require_POST
def policy_activate(request: HttpRequest, version: int) -> HttpResponse:
    try:
        row = services.policy_activate(domain=request.domain, version=version, actor=request.actor)
    except services.PolicyInvalid as exc:
        messages.error(request, f"Version {version} cannot be activated: {exc.message}")
        return redirect("guardrails_policy", domain_id=request.domain.pk)
    messages.success(request, f"Policy version {row.version} is now active.")
    return redirect("guardrails_policy", domain_id=request.domain.pk)
