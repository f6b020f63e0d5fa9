"""OpenAPI descriptions that drf-spectacular cannot infer by itself."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class PersonalAccessTokenScheme(OpenApiAuthenticationExtension):
    """Describe Bearer personal access tokens, which the management API accepts.

    Registered by string so that `tokens` stays untouched; move it there if that app adds
    its own (spectacular takes the one with the higher `priority`).
    """

    target_class = "tokens.authentication.PATAuthentication"
    name = "personalAccessToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal access token (`cube_pat_...`) with the needed scope.",
        }


# Every error the management API answers, in its envelope (domains.drf.exception_handler):
# `{"detail": message, "code": code}`, or field errors `{field: [messages]}` on a 400.
ERROR_STATUSES = {
    "400": "Invalid input: field errors, or detail and code.",
    "401": "No or a bad credential.",
    "403": "The credential lacks the permission or scope.",
    "404": "Not found, or not visible to this user.",
    "405": "Method not allowed.",
    "409": "A conflicting change was made meanwhile.",
    "415": "Unsupported media type.",
    "429": "Too many requests.",
}
ERROR_SCHEMA = {
    "type": "object",
    "description": "`detail` and `code`, or on a 400 each invalid field with its messages.",
    "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
    "additionalProperties": {
        "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object"}]
    },
}


def error_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: document the error answers of every
    operation, which views do not declare one by one."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
    return result
