"""Pages: sign-up and the domain dashboard."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from domains import services
from domains.forms import DomainCreateForm, SignUpForm
from domains.models import Domain


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("dashboard")
    return render(request, "domains/signup.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def dashboard(request: HttpRequest) -> HttpResponse:
    form = DomainCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        domain = services.domain_create(creator=request.user, **form.cleaned_data)
        messages.success(request, f"Domain “{domain.name}” created.")
        return redirect("dashboard")
    domains = (
        Domain.objects.for_user(request.user)
        .select_related()
        .prefetch_related("memberships__role")
        .order_by("name")
    )
    rows = [
        (domain, next(m.role for m in domain.memberships.all() if m.user_id == request.user.pk))
        for domain in domains
    ]
    return render(
        request,
        "domains/dashboard.html",
        {"rows": rows, "form": form},
        status=400 if form.errors else 200,
    )
