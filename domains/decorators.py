"""The page-side gate: resolve the domain once and map service errors to HTTP in one place."""

import functools
from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from cubeai.exceptions import DomainError, NotFound, PermissionDenied
from domains import selectors
from domains.forms import apply_service_errors
from domains.selectors import Actor


def page_errors(view: Callable) -> Callable:
    """Turn the services' exceptions into 404, 403 or a 4xx page with the message."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except PermissionDenied as exc:
            raise DjangoPermissionDenied(exc.message) from None
        except DomainError as exc:
            return render(
                request,
                "domains/error.html",
                {"message": exc.message, "domain": getattr(request, "domain", None)},
                status=exc.status,
            )

    return wrapper


def domain_page(permission: str | None = None) -> Callable:
    """Open a page of `/domains/<domain_id>/...` for a signed-in member holding `permission`.

    Sets `request.domain`, `request.granted` (the rights in force) and `request.actor`.
    Outsiders get 404, members without the permission 403. A POST counts as a change, so
    it is refused in a frozen domain for everyone but platform staff.
    """

    def decorate(view: Callable) -> Callable:
        @login_required
        @page_errors
        @functools.wraps(view)
        def wrapper(request: HttpRequest, domain_id, *args, **kwargs) -> HttpResponse:
            domain, granted = selectors.domain_for_user(
                user=request.user, domain_id=domain_id, write=request.method == "POST"
            )
            request.domain, request.granted = domain, granted
            request.actor = Actor(user=request.user, permissions=granted)
            if permission is not None and permission not in granted:
                raise PermissionDenied(f"This needs the {permission} permission.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def form_service(form, call: Callable[[], object]) -> bool:
    """Run a service call for a valid form; on a 400/409 show its errors on the form.

    NotFound and PermissionDenied pass through, to become 404 and 403 in `domain_page`.
    """
    try:
        call()
    except (NotFound, PermissionDenied):
        raise
    except DomainError as exc:
        apply_service_errors(form, exc)
        return False
    return True
