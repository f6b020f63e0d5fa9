"""The limits panel of a domain's overview (the limits in force and this month's budget)
and the budget panel of its usage page (the domain's budget and the caller's tokens').

A template tag, so the tenancy app's overview view never imports the limits app; it shows
only to those who may read the domain's usage (as the limits page does)."""

from django import template

from domains import permissions
from limits import selectors

register = template.Library()


@register.inclusion_tag("limits/_overview_limits.html", takes_context=True)
def overview_limits(context) -> dict:
    request = context["request"]
    if permissions.USAGE_READ not in request.granted:
        return {"show": False}
    return {
        "show": True,
        "domain": request.domain,
        **selectors.domain_limits(domain=request.domain),
    }


@register.inclusion_tag("limits/_usage_budgets.html", takes_context=True)
def usage_budgets(context) -> dict:
    request = context["request"]
    if permissions.USAGE_READ not in request.granted:
        return {"show": False}
    return {
        "show": True,
        "domain": request.domain,
        "budget": selectors.domain_budget(domain=request.domain).as_dict(),
        "token_budgets": selectors.token_budgets(domain=request.domain, owner=request.user),
    }
