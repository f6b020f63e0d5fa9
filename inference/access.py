"""Which domain may use which model, and which backends serve a domain: read and written here.

The rule: a domain may use a public model unless its admins denied it, and a private model
only when platform staff granted it. A `ModelAccess` row exists only where a domain departs
from the platform's default. The gateway applies the same rule to its in-memory snapshot
(`may_use`), the pages and the management API to the database (`models_for_domain`).
"""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q, QuerySet

from cubeai.exceptions import PermissionDenied
from domains import permissions
from domains.models import Domain
from domains.selectors import Actor
from domains.services import Invalid, audit_record, domain_writable, require_permission
from inference.models import Backend, Deployment, Model, ModelAccess


def may_use(*, public: bool, rule: bool | None) -> bool:
    """The domain's explicit rule if it has one, else the platform's default."""
    return rule if rule is not None else public


def models_for_domain(domain: Domain | str) -> QuerySet[Model]:
    """The models a domain may use."""
    rules = ModelAccess.objects.filter(domain=domain)
    denied = rules.filter(allowed=False).values("model_id")
    granted = rules.filter(allowed=True).values("model_id")
    return Model.objects.filter((Q(public=True) & ~Q(pk__in=denied)) | Q(pk__in=granted))


def rules_by_domain() -> dict[str, dict[int, bool]]:
    """Every domain's explicit rules (domain id -> model id -> allowed), for the snapshot."""
    rules: dict[str, dict[int, bool]] = {}
    for row in ModelAccess.objects.values("domain_id", "model_id", "allowed"):
        rules.setdefault(str(row["domain_id"]), {})[row["model_id"]] = row["allowed"]
    return rules


def backends_serving(
    domain: Domain | str, *, model: str | None = None, backend: str | None = None
) -> list[Backend]:
    """Enabled backends that may serve traffic and deploy a model the domain may use,
    narrowed to one model or backend name when given; ordered by name."""
    models = models_for_domain(domain)
    if model is not None:
        models = models.filter(name=model)
    deployments = Deployment.objects.filter(
        model__in=models, enabled=True, backend__enabled=True
    ).exclude(backend__tee_type=Backend.TeeType.NONE, backend__allow_not_confidential=False)
    rows = Backend.objects.filter(pk__in=deployments.values("backend_id"))
    if backend is not None:
        rows = rows.filter(name=backend)
    return list(rows.order_by("name"))


def domains_served_by(backend: Backend) -> list[Domain]:
    """The live domains that may use a model this backend deploys (for their audit trails)."""
    return [
        domain
        for domain in Domain.objects.filter(deleted_at__isnull=True).order_by("pk")
        if models_for_domain(domain).filter(deployments__backend=backend).exists()
    ]


@dataclass(frozen=True, slots=True)
class ModelAccessRow:
    """One model as a domain sees it: may it be used, and why."""

    name: str
    public: bool
    allowed: bool
    # True or False when the domain has an explicit rule, None when the default applies.
    override: bool | None
    description: str


def model_access_list(*, domain: Domain, include_private: bool = False) -> list[ModelAccessRow]:
    """Models the domain may see: public ones and private ones granted to it.

    Platform staff (`include_private`) also see private models not granted yet, so they
    can grant them. Rules of other domains are never read.
    """
    rules = dict(ModelAccess.objects.filter(domain=domain).values_list("model_id", "allowed"))
    rows = []
    for model in Model.objects.order_by("name"):
        override = rules.get(model.pk)
        allowed = may_use(public=model.public, rule=override)
        if not model.public and not allowed and not include_private:
            continue
        rows.append(
            ModelAccessRow(
                name=model.name,
                public=model.public,
                allowed=allowed,
                override=override,
                description=model.description,
            )
        )
    return rows


@transaction.atomic
def model_access_set(*, actor: Actor, domain: Domain, model: str, allowed: bool | None) -> Model:
    """Allow or deny a model in a domain; `None` goes back to the platform's default.

    Domain admins may deny public models and restore them; only platform staff may grant
    a private model. A private model the domain cannot see is reported as unknown.
    """
    require_permission(actor, permissions.DOMAIN_MANAGE)
    domain = domain_writable(actor, domain)
    target = Model.objects.filter(name=model).first()
    rule = ModelAccess.objects.filter(domain=domain, model=target).first() if target else None
    visible = target is not None and (
        target.public or actor.user.is_staff or (rule and rule.allowed)
    )
    if not visible:
        raise Invalid({"model": ["No such model."]})
    if allowed is not None and not isinstance(allowed, bool):
        raise Invalid({"allowed": ["Give true, false or null."]})
    if allowed and not target.public and not actor.user.is_staff and not (rule and rule.allowed):
        raise PermissionDenied("Only platform staff can grant a private model.", param="model")
    # A rule is kept only where it differs from the platform's default.
    if allowed is None or allowed == target.public:
        ModelAccess.objects.filter(domain=domain, model=target).delete()
    else:
        ModelAccess.objects.update_or_create(
            domain=domain, model=target, defaults={"allowed": allowed}
        )
    audit_record(actor, domain, "model_access.set", target.name, allowed=allowed)
    return target
