"""Domain pages of inference: the models a domain may use, the browser chat, attestation (each
backend serving the domain, its latest evidence) and usage."""

import json

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from cubeai.lib.downloads import csv_download
from domains import permissions
from domains.decorators import domain_page, form_service
from inference import access, audit, charts, selectors, usage
from inference.attestation import selectors as attestation_selectors
from inference.forms import ModelAccessForm, RequestAuditFilterForm, UsagePeriodForm
from inference.models import Backend, Model


def _models_page(request: HttpRequest, *, status: int = 200) -> HttpResponse:
    rows = access.model_access_list(domain=request.domain, include_private=request.user.is_staff)
    context = {
        "domain": request.domain,
        "rows": rows,
        "can_manage": permissions.DOMAIN_MANAGE in request.granted,
    }
    return render(request, "inference/models.html", context, status=status)


@domain_page(permissions.MODELS_READ)
@require_GET
def domain_models(request: HttpRequest) -> HttpResponse:
    return _models_page(request)


@domain_page(permissions.DOMAIN_MANAGE)
@require_POST
def model_access_set(request: HttpRequest) -> HttpResponse:
    form = ModelAccessForm(request.POST)
    if form.is_valid() and form_service(
        form,
        lambda: access.model_access_set(
            actor=request.actor,
            domain=request.domain,
            model=form.cleaned_data["model"],
            allowed=form.allowed(),
        ),
    ):
        messages.success(request, f"Access to {form.cleaned_data['model']} saved.")
        return redirect("domain_models", domain_id=request.domain.pk)
    for errors in form.errors.values():
        messages.error(request, " ".join(errors))
    return _models_page(request, status=400)


@domain_page(permissions.CHAT)
@require_GET
def domain_chat(request: HttpRequest) -> HttpResponse:
    """The chat page: the conversation lives in the browser and goes over the WebSocket
    (`inference.consumers.ChatConsumer`); the page only lists the domain's chat models."""
    models = [
        model.name
        for model in access.models_for_domain(request.domain).order_by("name")
        if Model.Task.CHAT in model.tasks
    ]
    return render(request, "inference/chat.html", {"domain": request.domain, "models": models})


def _tcb_text(claims: dict) -> str:
    """SEV-SNP's reported TCB levels (with Turin's FMC), or TDX's TCB status."""
    tcb = claims.get("reported_tcb")
    if isinstance(tcb, dict):
        parts = ("fmc", "bootloader", "tee", "snp", "microcode")
        return ", ".join(f"{part} {tcb[part]}" for part in parts if part in tcb)
    return str(claims.get("tcb_status") or "")


@domain_page(permissions.ATTESTATION_READ)
@require_GET
def domain_attestation(request: HttpRequest) -> HttpResponse:
    rows = []
    for backend in access.backends_serving(request.domain):
        record = attestation_selectors.last_platform_record(backend)
        claims = record.claims if record else {}
        policy = attestation_selectors.policy_export(backend=backend)
        fields = [
            {**field, "value_text": json.dumps(field["value"])} for field in policy["policy_fields"]
        ]
        rows.append(
            {
                "backend": backend,
                "confidential": backend.tee_type != Backend.TeeType.NONE,
                "record": record,
                "measurement": claims.get("measurement"),
                "tcb": _tcb_text(claims),
                "policy": policy,
                "policy_fields": fields,
                "policy_json": json.dumps(policy["policy"], indent=2, sort_keys=True),
            }
        )
    return render(request, "inference/attestation.html", {"domain": request.domain, "rows": rows})


@domain_page(permissions.ATTESTATION_READ)
@require_GET
def domain_attestation_evidence(request: HttpRequest, backend_id: int) -> HttpResponse:
    """The backend's last recorded evidence and verification, as a JSON download."""
    backend = next((b for b in access.backends_serving(request.domain) if b.pk == backend_id), None)
    record = attestation_selectors.last_platform_record(backend) if backend is not None else None
    if record is None:
        raise Http404("No evidence recorded for this backend.")
    response = HttpResponse(
        json.dumps(attestation_selectors.record_download(record), indent=2),
        content_type="application/json",
    )
    response["Content-Disposition"] = (
        f'attachment; filename="{backend.name.replace("/", "_")}-evidence.json"'
    )
    return response


def _usage_scope(request: HttpRequest) -> int | None:
    """The member whose usage this request may read, or None for the whole domain."""
    return selectors.usage_reader(domain=request.domain, user_id=request.user.pk)


def usage_context(form: UsagePeriodForm, report: dict) -> dict:
    """What `inference/_usage_summary.html` and the breakdown tables need: the period picker,
    the charts and the rows with their shares (the domain's usage page, a token's usage)."""
    return {
        "form": form,
        "report": report,
        "charts": charts.usage_charts(report["series"]),
        "by_model": charts.shares(report["by_model"]),
        "by_token": charts.shares(report["by_token"]),
        "by_member": charts.shares(report["by_member"]),
        "by_domain": charts.shares(report.get("by_domain", [])),
        "choices": UsagePeriodForm.DAYS,
        "query": f"start={report['start']}&end={report['end']}",
    }


@domain_page(permissions.USAGE_READ)
@require_GET
def domain_usage(request: HttpRequest) -> HttpResponse:
    form = UsagePeriodForm(request.GET or None)
    period = form.period()
    report = usage.usage_report(domain=request.domain, user_id=_usage_scope(request), period=period)
    return render(
        request,
        "inference/usage.html",
        {"domain": request.domain, **usage_context(form, report)},
        status=400 if form.errors else 200,
    )


@domain_page(permissions.USAGE_READ)
@require_GET
def domain_usage_export(request: HttpRequest) -> HttpResponse:
    form = UsagePeriodForm(request.GET or None)
    if request.GET and not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain")
    period = form.period()
    rows = usage.usage_export_rows(
        domain=request.domain, user_id=_usage_scope(request), period=period
    )
    return csv_download(
        rows, usage.EXPORT_COLUMNS, f"usage-{request.domain.route}-{period.start}-{period.end}.csv"
    )


REQUEST_AUDIT_ROWS = 200


@domain_page(permissions.AUDIT_READ)
@require_GET
def domain_audit_requests(request: HttpRequest) -> HttpResponse:
    """Per-request audit records: who, which token, model, backend, status, guardrails,
    attestation; never any text."""
    form = RequestAuditFilterForm(request.GET or None)
    events = audit.request_events(domain=request.domain, **form.filters())
    return render(
        request,
        "inference/audit_requests.html",
        {
            "domain": request.domain,
            "form": form,
            "rows": list(audit.request_rows(events[:REQUEST_AUDIT_ROWS])),
            "limit": REQUEST_AUDIT_ROWS,
            "query": request.GET.urlencode(),
            "retention_days": settings.CUBEAI_RETENTION_USAGE_DAYS,
        },
        status=400 if form.errors else 200,
    )


@domain_page(permissions.AUDIT_READ)
@require_GET
def domain_audit_requests_export(request: HttpRequest) -> HttpResponse:
    form = RequestAuditFilterForm(request.GET or None)
    if request.GET and not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain")
    events = audit.request_events(domain=request.domain, **form.filters())
    return csv_download(
        audit.request_rows_all(events), audit.COLUMNS, f"requests-{request.domain.route}.csv"
    )
