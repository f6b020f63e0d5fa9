"""The inference panels of a domain's overview page: the models it may use with their TEE
and attestation state, and today's usage beside the last week's.

Template tags, so the tenancy app's overview view never imports inference (domains/README.md);
each panel reads what the request's rights allow and nothing else.
"""

from django import template

from domains import permissions
from inference import access, selectors, usage
from inference.models import Backend, Deployment

register = template.Library()


@register.inclusion_tag("inference/_overview_models.html", takes_context=True)
def overview_models(context) -> dict:
    """Each model the domain may use, with the backends deploying it: TEE and attestation."""
    request = context["request"]
    if permissions.MODELS_READ not in request.granted:
        return {"show": False}
    models = list(access.models_for_domain(request.domain).order_by("name"))
    deployments = (
        Deployment.objects.filter(model__in=models, enabled=True, backend__enabled=True)
        .select_related("backend")
        .order_by("backend__name")
    )
    by_model: dict[int, list[Backend]] = {}
    for deployment in deployments:
        by_model.setdefault(deployment.model_id, []).append(deployment.backend)
    return {
        "show": True,
        "domain": request.domain,
        "rows": [{"model": model, "backends": by_model.get(model.pk, [])} for model in models],
    }


@register.inclusion_tag("inference/_overview_usage.html", takes_context=True)
def overview_usage(context) -> dict:
    """Today's requests, tokens and errors beside the last seven days' daily average."""
    request = context["request"]
    if permissions.USAGE_READ not in request.granted:
        return {"show": False}
    reader = selectors.usage_reader(domain=request.domain, user_id=request.user.pk)
    numbers = usage.usage_today_and_week(domain=request.domain, user_id=reader)
    return {"show": True, "domain": request.domain, "own": reader is not None, **numbers}


@register.simple_tag(takes_context=True)
def first_chat_model(context) -> str:
    """A chat model the domain may use, for the quick-start snippet (empty if none)."""
    request = context["request"]
    for model in access.models_for_domain(request.domain).order_by("name"):
        if "chat" in model.tasks:
            return model.name
    return ""
