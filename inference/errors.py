"""OpenAI's error envelope, used by every failure of the OpenAI-compatible API."""

import orjson
from django.http import HttpResponse

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


class APIError(Exception):
    """An error the API answers in OpenAI's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or TYPES.get(status, "server_error")
        self.headers = headers or {}
        self.extra = extra or {}

    @classmethod
    def from_domain_error(cls, exc: DomainError) -> "APIError":
        return cls(
            exc.status, exc.message, param=exc.param, code=exc.code, headers=dict(exc.headers)
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
                **self.extra,
            }
        }

    def response(self) -> HttpResponse:
        response = HttpResponse(
            orjson.dumps(self.body()), status=self.status, content_type="application/json"
        )
        for name, value in self.headers.items():
            response[name] = value
        return response


def not_found_route() -> APIError:
    return APIError(
        404, "Unknown request URL. Please check the URL and method.", code="unknown_url"
    )


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def sse_error_event(error: APIError) -> bytes:
    """An error after a stream began: one `data:` event, then the stream closes."""
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"
