"""Writes to guardrail policies: save a new version, activate a version; reads the one in force.

Every save validates the whole document first (`guardrails.validate_policy`, which also
refuses unsafe admin regexes) and writes in one transaction, so a refused policy leaves no
row behind. Versions are never edited: each save is a new version number, and activating a
version deactivates the previous one in the same transaction. The gateway's routing
snapshot reads the active rows (`inference.registry.load_guardrails`), so a change reaches
every process within one snapshot refresh.
"""

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from cubeai import jsonbody
from cubeai.exceptions import Conflict, DomainError, NotFound, PermissionDenied
from domains import permissions
from domains.models import Domain
from domains.selectors import Actor
from domains.services import audit_record, domain_writable
from guardrails import DEFAULT_POLICY, Policy, PolicyError, validate_policy
from guardrails.models import GuardrailPolicy


class PolicyInvalid(DomainError):
    """The policy document is invalid; `errors` maps each field path to its messages.

    Paths are prefixed with `document.` (the API's body field), e.g.
    `document.input.5.OPTIONS.regexes`; `field_errors` keeps the policy's own paths.
    """

    status = 400
    code = "invalid_policy"

    def __init__(self, field_errors: list[dict[str, str]]) -> None:
        self.field_errors = field_errors
        errors: dict[str, list[str]] = {}
        for error in field_errors:
            errors.setdefault(f"document.{error['field']}", []).append(error["message"])
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in field_errors))


def _require_manage(actor: Actor, domain: Domain | None) -> None:
    if domain is None:
        if not actor.user.is_staff:
            raise PermissionDenied("Only platform staff can change the platform default policy.")
    elif not actor.has(permissions.DOMAIN_MANAGE):
        raise PermissionDenied(f"This needs the {permissions.DOMAIN_MANAGE} permission.")


def _parse(document: Any, version: int) -> Policy:
    """Validate a document as version `version`; the version it names itself is ignored."""
    if isinstance(document, str | bytes):
        try:
            document = jsonbody.loads(document, what="policy")
        except jsonbody.JSONBodyError as exc:
            raise PolicyInvalid([{"field": "policy", "message": str(exc)}]) from None
    if not isinstance(document, dict):
        raise PolicyInvalid([{"field": "policy", "message": "The policy must be a JSON object."}])
    try:
        return validate_policy({**document, "version": version})
    except PolicyError as exc:
        raise PolicyInvalid(exc.errors) from None


def _rows(domain: Domain | None):
    return GuardrailPolicy.objects.filter(domain=domain)


def _summary(policy: Policy) -> dict:
    """What an audit event says about a policy: its hash and its checks, never term lists."""
    return {
        "fingerprint": policy.fingerprint,
        "input": [spec.NAME.rsplit(".", 1)[-1] for spec in policy.input],
        "output": [spec.NAME.rsplit(".", 1)[-1] for spec in policy.output],
    }


def _deactivate_others(domain: Domain | None, keep: int | None) -> int | None:
    """Deactivate the scope's active version (other than `keep`); returns its number."""
    previous = _rows(domain).filter(active=True).exclude(pk=keep).first()
    if previous is None:
        return None
    _rows(domain).filter(pk=previous.pk).update(active=False)
    return previous.version


@transaction.atomic
def policy_save(
    *, domain: Domain | None, document: Any, actor: Actor, activate: bool = True
) -> GuardrailPolicy:
    """Save `document` as the next version of the domain's policy (None: the platform's).

    Raises `PolicyInvalid` (every field error at once) before anything is written.
    """
    _require_manage(actor, domain)
    if domain is not None:
        domain = domain_writable(actor, domain)
    # Lock the scope's versions so two concurrent saves cannot take the same number; the
    # unique constraint catches what the lock cannot (the first save of an empty scope).
    # (No ordering: Meta's orders by the nullable domain, an outer join PostgreSQL will not lock.)
    list(_rows(domain).order_by().select_for_update().values_list("pk", flat=True))
    version = (_rows(domain).aggregate(top=Max("version"))["top"] or 0) + 1
    policy = _parse(document, version)
    try:
        with transaction.atomic():
            previous = _deactivate_others(domain, keep=None) if activate else None
            row = GuardrailPolicy.objects.create(
                domain=domain,
                version=version,
                document=policy.model_dump(mode="json"),
                active=activate,
                created_by=actor.user,
            )
    except IntegrityError:
        raise Conflict("Another change to this policy was saved at the same time; retry.") from None
    if domain is not None:
        audit_record(
            actor,
            domain,
            "guardrails.save",
            f"v{version}",
            version=version,
            activated=activate,
            previous_active=previous,
            **_summary(policy),
        )
    return row


@transaction.atomic
def policy_activate(*, domain: Domain | None, version: int, actor: Actor) -> GuardrailPolicy:
    """Make an earlier (or inactive) version the one in force; validated again first."""
    _require_manage(actor, domain)
    if domain is not None:
        domain = domain_writable(actor, domain)
    row = _rows(domain).order_by().select_for_update().filter(version=version).first()
    if row is None:
        raise NotFound("No such policy version.")
    # A version saved by an older release, or written around the services, may no longer
    # be valid: it is never activated then.
    policy = _parse(row.document, row.version)
    if row.active:
        return row
    previous = _deactivate_others(domain, keep=row.pk)
    row.active = True
    row.save(update_fields=["active"])
    if domain is not None:
        audit_record(
            actor,
            domain,
            "guardrails.activate",
            f"v{version}",
            version=version,
            previous_active=previous,
            **_summary(policy),
        )
    return row


def policy_row_active(*, domain: Domain | None) -> GuardrailPolicy | None:
    """The active row of the domain, else the platform default's; None if neither exists."""
    if domain is not None:
        row = _rows(domain).filter(active=True).first()
        if row is not None:
            return row
    return _rows(None).filter(active=True).first()


def policy_active(*, domain: Domain | None) -> Policy:
    """The policy in force for the domain: its own active version, else the platform
    default row, else the built-in `DEFAULT_POLICY` (what the gateway applies too)."""
    row = policy_row_active(domain=domain)
    return row.policy if row is not None else DEFAULT_POLICY


def policy_versions(*, domain: Domain | None):
    """Every version of the scope's policy, newest first."""
    return _rows(domain).select_related("created_by").order_by("-version")


def policy_get(*, domain: Domain | None, version: int) -> GuardrailPolicy:
    row = _rows(domain).filter(version=version).first()
    if row is None:
        raise NotFound("No such policy version.")
    return row
