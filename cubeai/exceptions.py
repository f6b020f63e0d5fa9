"""Exceptions raised by services on purpose; each API maps them to HTTP once."""


class DomainError(Exception):
    """Base class of the errors that services in this project raise on purpose."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        # Response headers the error carries (`Retry-After` on a 429).
        self.headers: dict[str, str] = {}


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it does."""

    status = 404
    code = "not_found"


class PermissionDenied(DomainError):
    """The caller is known but not allowed to do this."""

    status = 403
    code = "permission_denied"


class Conflict(DomainError):
    """The request conflicts with the current state (last admin, duplicate member...)."""

    status = 409
    code = "conflict"


class AuthenticationFailed(DomainError):
    """No valid credential: one message whatever the reason, so nothing leaks."""

    status = 401
    code = "invalid_api_key"

    def __init__(self, message: str = "Invalid or missing personal access token.") -> None:
        super().__init__(message)
