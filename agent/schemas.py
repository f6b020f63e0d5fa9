"""Request bodies of the JSON endpoints, validated with pydantic.

Unknown parameters are rejected with a 400 that names them: a client must never believe a
parameter took effect when it was silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import AgentError, invalid_request

MAX_STOP_SEQUENCES = 4
MAX_EMBEDDING_INPUTS = 2048

Schema = TypeVar("Schema", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """A text part of a message's content (the only kind these models read)."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """One turn of the conversation."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class StreamOptions(_Strict):
    """OpenAI's ``stream_options``."""

    include_usage: bool = False


class ResponseFormat(_Strict):
    """Plain text or any JSON object (llama.cpp constrains the grammar)."""

    type: Literal["text", "json_object"]


class _Sampling(_Strict):
    model: str
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: int | None = None
    n: Literal[1] = 1
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def payload(self) -> dict[str, Any]:
        """The parameters to hand to the runtime (unset ones left to its defaults)."""
        return self.model_dump(exclude_none=True, exclude={"user"})


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormat | None = None


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    # OpenAI's default for the legacy completions endpoint.
    max_tokens: Annotated[int, Field(ge=1)] | None = 16


class EmbeddingRequest(_Strict):
    """``POST /v1/embeddings``."""

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def inputs(self) -> list[str] | list[list[int]]:
        value = self.input
        if isinstance(value, str):
            value = [value]
        if not value:
            raise invalid_request("'input' must not be empty.", param="input")
        if isinstance(value[0], int):
            return [list(value)]  # type: ignore[arg-type]
        if len(value) > MAX_EMBEDDING_INPUTS:
            raise invalid_request(
                f"'input' has {len(value)} items; at most {MAX_EMBEDDING_INPUTS} per request.",
                param="input",
            )
        if any(len(item) == 0 for item in value):
            raise invalid_request("'input' must not contain empty items.", param="input")
        return value  # type: ignore[return-value]


class AttestationRequest(_Strict):
    """``POST /attestation``."""

    nonce: str


class CredentialProvisioning(_Strict):
    """``POST /credentials``: a credential from the platform, with its proof (see
    ``agent/credentials.py``). The nonce is hex, the signature base64."""

    credential: Annotated[str, Field(min_length=32, max_length=512, pattern=r"^[!-~]+$")]
    version: Annotated[int, Field(ge=1, lt=2**63)]
    previous_valid_seconds: Annotated[int, Field(ge=0, le=24 * 3600)]
    nonce: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    signature: Annotated[str, Field(min_length=1, max_length=200)]


def parse(schema: type[Schema], body: Any) -> Schema:
    """Validate ``body``; turn the first problem into an OpenAI-style 400."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise _first_error(exc) from None


def _first_error(exc: ValidationError) -> AgentError:
    error = exc.errors()[0]
    location = [str(part) for part in error["loc"]]
    # Union members add their type names to the location; keep only the field path.
    path = [p for p in location if not _is_type_name(p)]
    param = ".".join(path) if path else None
    if error["type"] == "extra_forbidden":
        return invalid_request(f"Unsupported parameter: '{param}'.", param=param)
    if error["type"] == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param=param)
    return invalid_request(f"Invalid value for '{param}': {error['msg']}.", param=param)


def _is_type_name(part: str) -> bool:
    return part in {"str", "int", "float", "bool"} or part.startswith(("list[", "function-"))
