"""Profile → Personal Access Tokens: list, create, rotate, revoke and delete, and each
token's usage.

Each view parses the form, calls `tokens.services` and renders. A new secret follows
post/redirect/get: the POST that made it keeps it in the session under the token's id and
redirects; the GET shows it once and removes it from the session at once, so reloading the
page (or going back to it) never submits the form again nor shows the secret again. That
page is marked `no-store` so no cache keeps it.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cubeai.exceptions import Conflict
from cubeai.lib.downloads import csv_download
from domains.models import Domain
from inference import usage
from inference.forms import UsagePeriodForm
from inference.views import usage_context
from tokens import services
from tokens.forms import TokenCreateForm, TokenRotateForm
from tokens.models import Token
from tokens.services import TokenInvalid

# Session key of a secret waiting to be shown once: {"token": pk, "secret": ..., "rotated": ...}.
SHOW_ONCE = "tokens:show-once"


def _owned(request: HttpRequest, pk: int) -> Token:
    # Another user's token is a 404, like a token that does not exist.
    return get_object_or_404(Token.objects.for_owner(request.user), pk=pk)


def _show_once(request: HttpRequest, token: Token, secret: str, *, rotated: bool):
    """Keep the secret for the next GET of the token's secret page, and redirect there."""
    request.session[SHOW_ONCE] = {"token": token.pk, "secret": secret, "rotated": rotated}
    return redirect("tokens:secret", pk=token.pk)


@login_required
@require_GET
def token_secret(request: HttpRequest, pk: int) -> HttpResponse:
    """The secret of a token just created or rotated, shown once."""
    token = _owned(request, pk)
    waiting = request.session.get(SHOW_ONCE)
    if not waiting or waiting.get("token") != token.pk:
        messages.info(
            request,
            f"The secret of “{token.name}” was shown once and cannot be shown again; "
            "rotate the token for a new one.",
        )
        return redirect("tokens:list")
    del request.session[SHOW_ONCE]
    secret, rotated = waiting["secret"], waiting["rotated"]
    if token.all_domains:
        domains = list(Domain.objects.for_user(request.user).order_by("name"))
    else:
        domains = list(token.domains.filter(deleted_at__isnull=True).order_by("name"))
    base_urls = [
        (domain, request.build_absolute_uri(f"/proxy/{domain.pk}/v1")) for domain in domains
    ]
    response = render(
        request,
        "tokens/secret.html",
        {
            "token": token,
            "secret": secret,
            "rotated": rotated,
            "base_urls": base_urls,
            "base_url": base_urls[0][1] if base_urls else request.build_absolute_uri("/proxy/"),
        },
    )
    add_never_cache_headers(response)
    return response


@login_required
@require_GET
def token_list(request: HttpRequest) -> HttpResponse:
    tokens = list(Token.objects.for_owner(request.user).prefetch_related("domains"))
    response = render(
        request,
        "tokens/list.html",
        {
            "tokens": tokens,
            "expiring": [token for token in tokens if token.expires_soon],
            "rotate_form": TokenRotateForm(),
        },
    )
    add_never_cache_headers(response)
    return response


@login_required
@require_GET
def token_usage(request: HttpRequest, pk: int) -> HttpResponse:
    """One token's usage across every domain it was used in, from the daily aggregates."""
    token = _owned(request, pk)
    form = UsagePeriodForm(request.GET or None)
    report = usage.token_usage_report(token_id=token.pk, period=form.period())
    return render(
        request,
        "tokens/usage.html",
        {"token": token, **usage_context(form, report)},
        status=400 if form.errors else 200,
    )


@login_required
@require_GET
def token_usage_export(request: HttpRequest, pk: int) -> HttpResponse:
    """One token's usage as CSV: a row per day of the period, the page's daily series."""
    token = _owned(request, pk)
    form = UsagePeriodForm(request.GET or None)
    if request.GET and not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain")
    period = form.period()
    report = usage.token_usage_report(token_id=token.pk, period=period)
    return csv_download(
        report["series"],
        usage.TOKEN_EXPORT_COLUMNS,
        # The id, not the name: a token's name is the user's free text.
        f"usage-token-{token.pk}-{period.start}-{period.end}.csv",
    )


@login_required
@require_http_methods(["GET", "POST"])
def token_create(request: HttpRequest) -> HttpResponse:
    form = TokenCreateForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            token, secret = services.token_issue(
                owner=request.user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.expires_at(),
                domains=form.chosen_domains(),
            )
        except TokenInvalid as exc:
            form.add_service_errors(exc)
        else:
            return _show_once(request, token, secret, rotated=False)
    return render(request, "tokens/create.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_POST
def token_rotate(request: HttpRequest, pk: int) -> HttpResponse:
    token = _owned(request, pk)
    form = TokenRotateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose when the old secret stops working.")
        return redirect("tokens:list")
    try:
        secret = services.token_rotate(
            token=token, grace_seconds=form.cleaned_data["grace_seconds"]
        )
    except (TokenInvalid, Conflict) as exc:
        messages.error(request, exc.message)
        return redirect("tokens:list")
    return _show_once(request, token, secret, rotated=True)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = services.token_revoke(token=_owned(request, pk))
    messages.success(request, f"Token “{token.name}” revoked. It no longer works.")
    return redirect("tokens:list")


@login_required
@require_POST
def token_delete(request: HttpRequest, pk: int) -> HttpResponse:
    token = _owned(request, pk)
    name = token.name
    services.token_delete(token=token)
    messages.success(request, f"Token “{name}” deleted.")
    return redirect("tokens:list")
