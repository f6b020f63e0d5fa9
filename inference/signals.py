"""Every write that routing sees bumps the registry version (`RegistryVersion`), so each
process rebuilds its routing snapshot when, and only when, something changed. Writes that
bypass `save()` (queryset updates of backends) call `registry_changed` themselves."""

from django.db.models.signals import post_delete, post_save

from inference.models import registry_changed


def _changed(sender, **kwargs) -> None:
    if kwargs.get("raw"):
        return  # fixtures being loaded
    registry_changed()


def connect() -> None:
    from domains.models import Domain
    from guardrails.models import GuardrailPolicy
    from inference.models import Backend, Deployment, Model, ModelAccess

    # Domains: their allowed browser origins (CORS) and deletion are in the snapshot.
    for model in (Backend, Model, Deployment, ModelAccess, GuardrailPolicy, Domain):
        post_save.connect(_changed, sender=model, dispatch_uid=f"registry-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"registry-{model.__name__}-del")
