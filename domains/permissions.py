"""The permissions a role can grant inside a domain, and the built-in roles."""

MODELS_READ = "models:read"
CHAT = "chat"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
AUDIO_TRANSCRIPTIONS = "audio:transcriptions"
AUDIO_TRANSLATIONS = "audio:translations"
ATTESTATION_READ = "attestation:read"
USAGE_READ = "usage:read"
AUDIT_READ = "audit:read"
MEMBERS_MANAGE = "members:manage"
DOMAIN_MANAGE = "domain:manage"

INFERENCE = (CHAT, COMPLETIONS, EMBEDDINGS, AUDIO_TRANSCRIPTIONS, AUDIO_TRANSLATIONS)

ALL = (
    MODELS_READ,
    *INFERENCE,
    ATTESTATION_READ,
    USAGE_READ,
    AUDIT_READ,
    MEMBERS_MANAGE,
    DOMAIN_MANAGE,
)

CHOICES = [(permission, permission) for permission in ALL]

ADMIN = "admin"
MEMBER = "member"
VIEWER = "viewer"

# "member" reads usage of its own tokens only; "viewer" reads the domain's usage. The usage
# views tell the two apart by role, so both hold usage:read here.
BUILTIN_ROLES: dict[str, frozenset[str]] = {
    ADMIN: frozenset(ALL),
    MEMBER: frozenset({MODELS_READ, *INFERENCE, ATTESTATION_READ, USAGE_READ}),
    VIEWER: frozenset({MODELS_READ, ATTESTATION_READ, USAGE_READ}),
}

# A member whose role holds both of these is an admin: they may still enter a disabled
# domain, and a domain must always keep at least one of them.
ADMIN_PERMISSIONS = frozenset({MEMBERS_MANAGE, DOMAIN_MANAGE})
