"""Pages: sign-up, the dashboard, and each domain's overview, settings, members, roles,
invitations and audit log; the invitee's side of invitations.

Every domain page goes through `domain_page`, which resolves the domain once and maps
the services' exceptions to HTTP; the views only parse a form, call a service, render.
"""

import functools
import json

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cubeai.exceptions import DomainError
from cubeai.lib.downloads import csv_download
from domains import permissions, selectors, services
from domains.decorators import domain_page, form_service, page_errors
from domains.forms import (
    AuditFilterForm,
    DomainCreateForm,
    DomainDeleteForm,
    DomainSettingsForm,
    DomainStatusForm,
    InvitationForm,
    MemberAddForm,
    MemberRoleForm,
    RoleForm,
    SignUpForm,
    apply_service_errors,
)
from domains.models import Membership


def signin_limited(view):
    """A sign-in view whose form refused an address over its failed-authentication limit
    (`SignInForm`, `AdminSignInForm`) answers 429 with `Retry-After`, the page showing why."""

    @functools.wraps(view)
    def limited(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        form = (getattr(response, "context_data", None) or {}).get("form")
        retry_after = getattr(form, "retry_after", None)
        if retry_after:
            response.status_code = 429
            response["Retry-After"] = str(retry_after)
        return response

    return limited


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("dashboard")
    return render(
        request, "domains/signup.html", {"form": form}, status=400 if form.errors else 200
    )


@login_required
@require_http_methods(["GET", "POST"])
def dashboard(request: HttpRequest) -> HttpResponse:
    form = DomainCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            domain = services.domain_create(creator=request.user, **form.cleaned_data)
        except DomainError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Domain “{domain.name}” created.")
            return redirect("domain", domain_id=domain.pk)
    memberships = (
        Membership.objects.filter(user=request.user, domain__deleted_at__isnull=True)
        .select_related("domain", "role")
        .order_by("domain__name")
    )
    rows = [(membership.domain, membership.role) for membership in memberships]
    invitations = selectors.invitation_list_for_user(user=request.user).count()
    return render(
        request,
        "domains/dashboard.html",
        {"rows": rows, "form": form, "pending_invitations": invitations},
        status=400 if form.errors else 200,
    )


def _invalid(request: HttpRequest, template: str, context: dict) -> HttpResponse:
    return render(request, template, context, status=400)


# Overview and settings -----------------------------------------------------------------


@domain_page()
@require_GET
def domain_overview(request: HttpRequest) -> HttpResponse:
    membership = selectors.membership_for(user_id=request.user.pk, domain_id=request.domain.pk)
    return render(
        request,
        "domains/overview.html",
        {
            "domain": request.domain,
            "role": membership.role,
            "granted": sorted(request.granted),
            "member_count": request.domain.memberships.count(),
            "P": _permission_names(),
            "base_url": request.build_absolute_uri(f"/proxy/{request.domain.pk}/v1"),
        },
    )


def _permission_names() -> dict[str, str]:
    """Permission strings by a template-friendly name, e.g. P.MEMBERS_MANAGE."""
    return {
        name: value
        for name, value in vars(permissions).items()
        if name.isupper() and isinstance(value, str)
    }


def _settings_context(request: HttpRequest, **forms) -> dict:
    domain = request.domain
    context = {
        "domain": domain,
        "settings_form": DomainSettingsForm(
            initial={
                "name": domain.name,
                "tags": ", ".join(domain.tags),
                "metadata": domain.metadata,
                "cors_origins": "\n".join(domain.cors_origins),
            }
        ),
        "status_form": DomainStatusForm(
            initial={"status": domain.status}, staff=request.user.is_staff
        ),
        "delete_form": DomainDeleteForm(domain=domain),
    }
    context.update(forms)
    return context


@domain_page(permissions.DOMAIN_MANAGE)
@require_http_methods(["GET", "POST"])
def domain_settings(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = DomainSettingsForm(request.POST)
        if form.is_valid() and form_service(
            form,
            lambda: services.domain_update(
                actor=request.actor, domain=request.domain, **form.cleaned_data
            ),
        ):
            messages.success(request, "Settings saved.")
            return redirect("domain_settings", domain_id=request.domain.pk)
        return _invalid(
            request, "domains/settings.html", _settings_context(request, settings_form=form)
        )
    return render(request, "domains/settings.html", _settings_context(request))


@domain_page(permissions.DOMAIN_MANAGE)
@require_POST
def domain_status(request: HttpRequest) -> HttpResponse:
    form = DomainStatusForm(request.POST, staff=request.user.is_staff)
    if form.is_valid() and form_service(
        form,
        lambda: services.domain_set_status(
            actor=request.actor, domain=request.domain, status=form.cleaned_data["status"]
        ),
    ):
        messages.success(request, f"The domain is now {form.cleaned_data['status']}.")
        return redirect("domain_settings", domain_id=request.domain.pk)
    return _invalid(request, "domains/settings.html", _settings_context(request, status_form=form))


@domain_page(permissions.DOMAIN_MANAGE)
@require_POST
def domain_delete(request: HttpRequest) -> HttpResponse:
    form = DomainDeleteForm(request.POST, domain=request.domain)
    if form.is_valid() and form_service(
        form, lambda: services.domain_delete(actor=request.actor, domain=request.domain)
    ):
        messages.success(request, f"Domain “{request.domain.name}” deleted.")
        return redirect("dashboard")
    return _invalid(request, "domains/settings.html", _settings_context(request, delete_form=form))


# Members -------------------------------------------------------------------------------


def _members_context(request: HttpRequest, form: MemberAddForm | None = None) -> dict:
    domain = request.domain
    members = list(selectors.member_list(domain=domain))
    return {
        "domain": domain,
        "members": [
            (m, MemberRoleForm(domain=domain, initial={"role": m.role_id})) for m in members
        ],
        "form": form or MemberAddForm(domain=domain),
    }


@domain_page(permissions.MEMBERS_MANAGE)
@require_http_methods(["GET", "POST"])
def domain_members(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = MemberAddForm(request.POST, domain=request.domain)
        if form.is_valid() and form_service(
            form,
            lambda: services.member_add(
                actor=request.actor,
                domain=request.domain,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
            ),
        ):
            messages.success(request, f"{form.cleaned_data['email']} added.")
            return redirect("domain_members", domain_id=request.domain.pk)
        return _invalid(request, "domains/members.html", _members_context(request, form))
    return render(request, "domains/members.html", _members_context(request))


@domain_page(permissions.MEMBERS_MANAGE)
@require_POST
def member_role(request: HttpRequest, user_id: int) -> HttpResponse:
    membership = selectors.member_get(domain=request.domain, user_id=user_id)
    form = MemberRoleForm(request.POST, domain=request.domain)
    if form.is_valid() and form_service(
        form,
        lambda: services.member_change_role(
            actor=request.actor,
            domain=request.domain,
            membership=membership,
            role=form.cleaned_data["role"],
        ),
    ):
        messages.success(request, f"{membership.user.email} is now {form.cleaned_data['role']}.")
        return redirect("domain_members", domain_id=request.domain.pk)
    for error in form.errors.values():
        messages.error(request, " ".join(error))
    return _invalid(request, "domains/members.html", _members_context(request))


@domain_page(permissions.MEMBERS_MANAGE)
@require_POST
def member_remove(request: HttpRequest, user_id: int) -> HttpResponse:
    membership = selectors.member_get(domain=request.domain, user_id=user_id)
    services.member_remove(actor=request.actor, domain=request.domain, membership=membership)
    messages.success(request, f"{membership.user.email} removed.")
    if membership.user_id == request.user.pk:
        return redirect("dashboard")
    return redirect("domain_members", domain_id=request.domain.pk)


# Roles ---------------------------------------------------------------------------------


def _roles_context(request: HttpRequest, form: RoleForm | None = None) -> dict:
    roles = selectors.role_list(domain=request.domain).order_by("domain_id", "name")
    return {"domain": request.domain, "roles": roles, "form": form or RoleForm()}


@domain_page(permissions.MEMBERS_MANAGE)
@require_http_methods(["GET", "POST"])
def domain_roles(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = RoleForm(request.POST)
        if form.is_valid() and form_service(
            form,
            lambda: services.role_create(
                actor=request.actor,
                domain=request.domain,
                name=form.cleaned_data["name"],
                permissions=form.cleaned_data["permissions"],
            ),
        ):
            messages.success(request, f"Role “{form.cleaned_data['name']}” created.")
            return redirect("domain_roles", domain_id=request.domain.pk)
        return _invalid(request, "domains/roles.html", _roles_context(request, form))
    return render(request, "domains/roles.html", _roles_context(request))


@domain_page(permissions.MEMBERS_MANAGE)
@require_http_methods(["GET", "POST"])
def role_edit(request: HttpRequest, role_id: int) -> HttpResponse:
    role = selectors.role_get(domain=request.domain, role_id=role_id)
    form = RoleForm(
        request.POST or None, initial={"name": role.name, "permissions": role.permissions}
    )
    if request.method == "POST":
        if form.is_valid() and form_service(
            form,
            lambda: services.role_update(
                actor=request.actor,
                domain=request.domain,
                role=role,
                name=form.cleaned_data["name"],
                permissions=form.cleaned_data["permissions"],
            ),
        ):
            messages.success(request, f"Role “{form.cleaned_data['name']}” saved.")
            return redirect("domain_roles", domain_id=request.domain.pk)
        return _invalid(
            request, "domains/role.html", {"domain": request.domain, "role": role, "form": form}
        )
    return render(
        request, "domains/role.html", {"domain": request.domain, "role": role, "form": form}
    )


@domain_page(permissions.MEMBERS_MANAGE)
@require_POST
def role_delete(request: HttpRequest, role_id: int) -> HttpResponse:
    role = selectors.role_get(domain=request.domain, role_id=role_id)
    services.role_delete(actor=request.actor, domain=request.domain, role=role)
    messages.success(request, f"Role “{role.name}” deleted.")
    return redirect("domain_roles", domain_id=request.domain.pk)


# Invitations (the domain's side) -------------------------------------------------------


def _invitations_context(request: HttpRequest, form: InvitationForm | None = None) -> dict:
    return {
        "domain": request.domain,
        "invitations": selectors.invitation_list(domain=request.domain),
        "form": form or InvitationForm(domain=request.domain),
    }


@domain_page(permissions.MEMBERS_MANAGE)
@require_http_methods(["GET", "POST"])
def domain_invitations(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = InvitationForm(request.POST, domain=request.domain)
        if form.is_valid() and form_service(
            form,
            lambda: services.invitation_send(
                actor=request.actor,
                domain=request.domain,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                link_base=request.build_absolute_uri("/"),
            ),
        ):
            messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
            return redirect("domain_invitations", domain_id=request.domain.pk)
        return _invalid(request, "domains/invitations.html", _invitations_context(request, form))
    return render(request, "domains/invitations.html", _invitations_context(request))


@domain_page(permissions.MEMBERS_MANAGE)
@require_POST
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = selectors.invitation_get(domain=request.domain, invitation_id=invitation_id)
    services.invitation_revoke(actor=request.actor, domain=request.domain, invitation=invitation)
    messages.success(request, f"Invitation to {invitation.email} revoked.")
    return redirect("domain_invitations", domain_id=request.domain.pk)


@domain_page(permissions.MEMBERS_MANAGE)
@require_POST
def invitation_resend(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = selectors.invitation_get(domain=request.domain, invitation_id=invitation_id)
    services.invitation_resend(
        actor=request.actor,
        domain=request.domain,
        invitation=invitation,
        link_base=request.build_absolute_uri("/"),
    )
    messages.success(request, f"Invitation to {invitation.email} sent again with a new link.")
    return redirect("domain_invitations", domain_id=request.domain.pk)


# Audit ---------------------------------------------------------------------------------


AUDIT_PAGE_ROWS = 200
AUDIT_COLUMNS = ("created_at", "actor", "token_id", "action", "target", "details")


@domain_page(permissions.AUDIT_READ)
@require_GET
def domain_audit(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    events = selectors.audit_list(domain=request.domain, **form.filters())
    actions = selectors.audit_actions(domain=request.domain)
    return render(
        request,
        "domains/audit.html",
        {
            "domain": request.domain,
            "form": form,
            "events": events[:AUDIT_PAGE_ROWS],
            "limit": AUDIT_PAGE_ROWS,
            "actions": actions,
            "kinds": sorted({action.split(".")[0] + "." for action in actions}),
            "query": request.GET.urlencode(),
        },
        status=400 if form.errors else 200,
    )


@domain_page(permissions.AUDIT_READ)
@require_GET
def domain_audit_export(request: HttpRequest) -> HttpResponse:
    """Every matching event as CSV, streamed."""
    form = AuditFilterForm(request.GET or None)
    if request.GET and not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain")
    events = selectors.audit_list(domain=request.domain, **form.filters())
    rows = (
        {
            "created_at": event.created_at.isoformat(),
            "actor": event.actor.email if event.actor else "",
            "token_id": event.token_id or "",
            "action": event.action,
            "target": event.target,
            "details": json.dumps(event.details, sort_keys=True),
        }
        for event in events.iterator(chunk_size=2000)
    )
    return csv_download(rows, AUDIT_COLUMNS, f"audit-{request.domain.route}.csv")


# Invitations (the invitee's side) ------------------------------------------------------


@login_required
@require_GET
def my_invitations(request: HttpRequest) -> HttpResponse:
    invitations = selectors.invitation_list_for_user(user=request.user)
    return render(request, "domains/my_invitations.html", {"invitations": invitations})


def _answer(request: HttpRequest, invitation, answer: str) -> HttpResponse:
    if answer == "accept":
        membership = services.invitation_accept(user=request.user, invitation=invitation)
        messages.success(request, f"You joined {membership.domain.name}.")
        return redirect("domain", domain_id=membership.domain_id)
    services.invitation_decline(user=request.user, invitation=invitation)
    messages.success(request, "Invitation declined.")
    return redirect("my_invitations")


@login_required
@page_errors
@require_POST
def invitation_answer(request: HttpRequest, invitation_id: int, answer: str) -> HttpResponse:
    invitation = selectors.invitation_get_for_user(user=request.user, invitation_id=invitation_id)
    return _answer(request, invitation, answer)


@login_required
@page_errors
@require_http_methods(["GET", "POST"])
def invitation_link(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the email: shows the offer, and accepts or declines it on POST."""
    invitation = selectors.invitation_for_token(token=token)
    if request.method == "POST":
        answer = "accept" if request.POST.get("answer") == "accept" else "decline"
        return _answer(request, invitation, answer)
    return render(request, "domains/invitation_link.html", {"invitation": invitation})
