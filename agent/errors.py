"""Errors in OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``.

Runtimes and request parsing raise ``AgentError``; one exception handler in ``app.py``
turns it into the HTTP response, so every endpoint fails the same way.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """A request the agent cannot serve, with the HTTP status and OpenAI error fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = None
) -> AgentError:
    return AgentError(message, status=400, param=param, code=code)


def model_not_found(model: str, *, endpoint: str) -> AgentError:
    return AgentError(
        f"The model '{model}' does not exist or is not served for {endpoint} by this agent.",
        status=404,
        type="not_found_error",
        param="model",
        code="model_not_found",
    )


def server_error(message: str, *, status: int = 500, code: str | None = None) -> AgentError:
    return AgentError(message, status=status, type="server_error", code=code)


def frames_of(exc: BaseException) -> str:
    """An exception's type and stack frames, without its message (which may quote content)."""
    import traceback

    return f"{type(exc).__name__}\n" + "".join(traceback.format_tb(exc.__traceback__))
