"""Reads of usage: what a domain's requests cost, by model and by token, never their content."""

from domains import permissions
from domains.models import Domain, Membership


def usage_reader(*, domain: Domain, user_id: int) -> int | None:
    """Whose usage a reader sees: None for the whole domain's, else their own user id.

    Decided by the member's role, never by the rights in force: a token narrowed to
    `usage:read` must not turn a member, whose role uses models, into a reader of the whole
    domain. Readers of the whole domain are those whose role audits it (admins) or holds no
    inference right of its own (viewers); every other member sees their own tokens' usage.
    """
    membership = (
        Membership.objects.filter(domain=domain, user_id=user_id).select_related("role").first()
    )
    role = membership.role.permission_set if membership else frozenset()
    uses_models = any(p in role for p in permissions.INFERENCE)
    whole_domain = permissions.AUDIT_READ in role or not uses_models
    return None if membership and whole_domain else user_id
