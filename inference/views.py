"""Domain pages of inference: attestation (each backend serving the domain, its latest
evidence) and usage."""

import json

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from domains import permissions
from domains.decorators import domain_page
from inference import attest, selectors
from inference.models import AttestationRecord, Backend, Deployment, Model


def _backends_serving(domain) -> list[Backend]:
    """Enabled backends with a deployment of a model the domain may use."""
    models = Model.objects.for_domain(domain)
    deployments = Deployment.objects.filter(model__in=models, enabled=True, backend__enabled=True)
    return list(Backend.objects.filter(pk__in=deployments.values("backend_id")).order_by("name"))


def _last_record(backend: Backend) -> AttestationRecord | None:
    # The platform's own challenges; a client's challenge never changes what is shown here.
    return (
        AttestationRecord.objects.filter(backend=backend)
        .exclude(trigger=AttestationRecord.Trigger.CLIENT)
        .first()
    )


def _tcb_text(claims: dict) -> str:
    """SEV-SNP's reported TCB levels, or TDX's TCB status."""
    tcb = claims.get("reported_tcb")
    if isinstance(tcb, dict):
        return ", ".join(
            f"{part} {tcb.get(part)}" for part in ("bootloader", "tee", "snp", "microcode")
        )
    return str(claims.get("tcb_status") or "")


@domain_page(permissions.ATTESTATION_READ)
@require_GET
def domain_attestation(request: HttpRequest) -> HttpResponse:
    rows = []
    for backend in _backends_serving(request.domain):
        record = _last_record(backend)
        claims = record.claims if record else {}
        policy = attest.policy_export(backend=backend)
        rows.append(
            {
                "backend": backend,
                "confidential": backend.tee_type != Backend.TeeType.NONE,
                "record": record,
                "measurement": claims.get("measurement"),
                "tcb": _tcb_text(claims),
                "policy": policy,
                "policy_json": json.dumps(policy["policy"], indent=2, sort_keys=True),
            }
        )
    return render(request, "inference/attestation.html", {"domain": request.domain, "rows": rows})


@domain_page(permissions.ATTESTATION_READ)
@require_GET
def domain_attestation_evidence(request: HttpRequest, backend_id: int) -> HttpResponse:
    """The backend's last recorded evidence and verification, as a JSON download."""
    backend = next((b for b in _backends_serving(request.domain) if b.pk == backend_id), None)
    record = _last_record(backend) if backend is not None else None
    if record is None:
        raise Http404("No evidence recorded for this backend.")
    response = HttpResponse(
        json.dumps(attest.record_download(record), indent=2), content_type="application/json"
    )
    response["Content-Disposition"] = (
        f'attachment; filename="{backend.name.replace("/", "_")}-evidence.json"'
    )
    return response


USAGE_DAYS = (1, 7, 30, 90)


def usage_days(value: str | None) -> int:
    """The period asked for, one of USAGE_DAYS (7 by default or when unreadable)."""
    try:
        days = int(value or 7)
    except ValueError:
        days = 7
    return days if days in USAGE_DAYS else 7


@domain_page(permissions.USAGE_READ)
@require_GET
def domain_usage(request: HttpRequest) -> HttpResponse:
    own = selectors.usage_is_own_only(request.granted)
    days = usage_days(request.GET.get("days"))
    summary = selectors.usage_summary(
        domain=request.domain, user_id=request.user.pk if own else None, days=days
    )
    return render(
        request,
        "inference/usage.html",
        {"domain": request.domain, "summary": summary, "choices": USAGE_DAYS},
    )
