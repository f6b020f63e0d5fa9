"""The domain's limits page: what is in force, the budget left, and the forms to change it."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from cubeai.exceptions import PermissionDenied
from domains import permissions
from domains.decorators import domain_page, form_service
from limits import selectors, services
from limits.forms import DomainLimitsForm, TokenLimitsClearForm, TokenLimitsForm


def _context(request: HttpRequest, **forms) -> dict:
    overview = selectors.domain_limits(domain=request.domain)
    context = {
        "domain": request.domain,
        "overview": overview,
        "tokens": selectors.token_limits_list(
            domain=request.domain,
            owner_id=selectors.token_limits_owner(
                domain=request.domain, user_id=request.user.pk, granted=request.granted
            ),
        ),
        "can_manage": permissions.DOMAIN_MANAGE in request.granted,
        "domain_form": DomainLimitsForm(initial=overview["configured"]),
        "token_form": TokenLimitsForm(domain=request.domain),
    }
    context.update(forms)
    return context


@domain_page(permissions.USAGE_READ)
@require_http_methods(["GET", "POST"])
def domain_limits(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        if permissions.DOMAIN_MANAGE not in request.granted:
            raise PermissionDenied("Changing limits needs the domain:manage permission.")
        if request.POST.get("form") == "token_clear":
            form = TokenLimitsClearForm(request.POST, domain=request.domain)
            if form.is_valid():
                token_id = form.cleaned_data["token"]
                services.token_limits_clear(
                    actor=request.actor, domain=request.domain, token_id=token_id
                )
                name = dict(form.fields["token"].choices)[token_id]
                messages.success(request, f"“{name}” now has the domain's per-token limits.")
                return redirect("domain_limits", domain_id=request.domain.pk)
            for errors in form.errors.values():
                messages.error(request, " ".join(errors))
            return render(request, "limits/limits.html", _context(request), status=400)
        if request.POST.get("form") == "token":
            form = TokenLimitsForm(request.POST, domain=request.domain)
            saved = form.is_valid() and form_service(
                form,
                lambda: services.token_limits_set(
                    actor=request.actor,
                    domain=request.domain,
                    token_id=form.cleaned_data["token"],
                    **{k: form.cleaned_data[k] for k in services.TOKEN_FIELDS},
                ),
            )
            forms = {"token_form": form}
        else:
            form = DomainLimitsForm(request.POST)
            saved = form.is_valid() and form_service(
                form,
                lambda: services.domain_limits_set(
                    actor=request.actor, domain=request.domain, **form.cleaned_data
                ),
            )
            forms = {"domain_form": form}
        if saved:
            messages.success(request, "Limits saved; every server applies them within seconds.")
            return redirect("domain_limits", domain_id=request.domain.pk)
        return render(request, "limits/limits.html", _context(request, **forms), status=400)
    return render(request, "limits/limits.html", _context(request))
