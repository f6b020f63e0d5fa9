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
