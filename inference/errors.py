"""The errors of the inference pipeline, and OpenAI's envelope they are answered in.

The pipeline raises these on purpose; each entry point maps them once: the API to an HTTP
status and OpenAI's error envelope (`envelope`), the WebSocket consumer to an error frame,
a Celery task to the job's error. Every error carries the status and the OpenAI `type` and
`code` a client of OpenAI's API expects, and the headers the answer needs (`Retry-After`,
`x-ratelimit-*`, the serving backend's attestation).
"""

from typing import Any

from cubeai.exceptions import DomainError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class InferenceError(DomainError):
    """An error answered in OpenAI's envelope; subclasses name the pipeline's failures."""

    status = 400
    code: str | None = None
    # The backend (a routing `Target`) that answered, or was last tried, when one was: a
    # failed job records it.
    target: Any = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, param=param)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.type = type or TYPES.get(self.status, "server_error")
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    @classmethod
    def from_domain_error(cls, exc: DomainError) -> "InferenceError":
        """A service's error (not found, permission denied...) as an inference error."""
        if isinstance(exc, InferenceError):
            return exc
        return cls(
            exc.message, status=exc.status, param=exc.param, code=exc.code, headers=exc.headers
        )


class InvalidParameter(InferenceError):
    """A parameter the model or the platform cannot honour, named in `param`."""

    code = "invalid_value"


class UnsupportedParameter(InvalidParameter):
    """An optional OpenAI feature the model's deployments do not have."""

    code = "unsupported_parameter"


class ModelNotSupported(InvalidParameter):
    """The model exists but does not serve this endpoint."""

    code = "model_not_supported"


class ContextLengthExceeded(InvalidParameter):
    """The request does not fit the model's context (OpenAI's code for it)."""

    code = "context_length_exceeded"


class ContentFiltered(InferenceError):
    """The guardrails blocked the prompt (Azure OpenAI's convention: 400 `content_filter`).

    `violations` names the types that fired, never the text that fired them.
    """

    code = "content_filter"

    def __init__(self, message: str, *, violations: list[str]) -> None:
        super().__init__(message, extra={"violations": violations})
        self.violations = violations


class ModelNotFound(InferenceError):
    """The model does not exist, or this domain may not use it (indistinguishable)."""

    status = 404
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )


class RouteNotFound(InferenceError):
    """No such endpoint."""

    status = 404
    code = "unknown_url"

    def __init__(self) -> None:
        super().__init__("Unknown request URL. Please check the URL and method.")


class RequestTooLarge(InferenceError):
    """The body passed its path's size limit."""

    status = 413
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body exceeds the limit of {limit // (1024 * 1024)} MB.")


class RateLimited(InferenceError):
    """A rate limit was reached; `headers` carry `Retry-After` and `x-ratelimit-*`."""

    status = 429
    code = "rate_limit_exceeded"


class NoBackend(InferenceError):
    """No healthy, attested backend can serve the model right now."""

    status = 503
    code = "backend_unavailable"

    def __init__(self, message: str, *, extra: dict | None = None) -> None:
        super().__init__(message, type="server_error", extra=extra)


class ServiceUnavailable(InferenceError):
    """The platform's own database or Redis is unreachable for now (a restart, a failover):
    retry shortly. Nothing of the request was done."""

    status = 503
    code = "service_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The service is briefly unavailable; please retry.",
            type="server_error",
            headers={"Retry-After": "2"},
        )


class UpstreamFailed(InferenceError):
    """The backend failed (an error, a cut, an invalid answer); its internals stay hidden."""

    status = 502

    def __init__(self, message: str = "The backend failed to process the request.") -> None:
        super().__init__(message, type="server_error")


class UpstreamTimeout(UpstreamFailed):
    """The backend took the request but did not answer in time (not retried elsewhere)."""

    status = 504
    code = "timeout"

    def __init__(self) -> None:
        super().__init__("The backend did not answer in time.")


def envelope(error: InferenceError) -> dict[str, Any]:
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
            **error.extra,
        }
    }
