"""OpenAI's request and response objects, as this API accepts and returns them.

Requests are validated strictly: an unknown parameter is a 400 naming it, so a client never
believes a parameter took effect when it was ignored, and a value of the wrong JSON type is
refused as OpenAI refuses it (`"stream": "yes"`, `"max_tokens": "5"`: pydantic's strict mode,
which still takes an integer where a number is asked for). A model name never holds a control
character. The names follow OpenAI's types.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AUDIO_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


# A model name: printable, so that it is safe to store and to log.
ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    def payload(self) -> dict[str, Any]:
        """The parameters the client set, as JSON-ready data to forward."""
        return self.model_dump(mode="json", exclude_unset=True)


class _Open(BaseModel):
    # Message parts and tool definitions are passed through to the backend as sent.
    model_config = ConfigDict(extra="allow", strict=True)


class ChatCompletionMessageParam(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionStreamOptionsParam(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    model: ModelName
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool | None = None
    stream_options: ChatCompletionStreamOptionsParam | None = None
    user: Annotated[str, Field(max_length=256)] | None = None


class ChatCompletionCreateParams(_Sampling):
    """`POST /chat/completions`."""

    messages: Annotated[list[ChatCompletionMessageParam], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


class CompletionCreateParams(_Sampling):
    """`POST /completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None


class EmbeddingCreateParams(_Request):
    """`POST /embeddings`."""

    model: ModelName
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None


class Model(BaseModel):
    """OpenAI's model object."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorObject


# Responses: documented as OpenAI returns them; backends may add fields, which pass through.


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class CompletionUsage(_Response):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class ChatCompletionMessage(_Response):
    role: str
    content: str | None = None


class ChatCompletionChoice(_Response):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None = None


class ChatCompletion(_Response):
    """A chat completion; with `stream: true`, a `text/event-stream` of
    `chat.completion.chunk` objects (`data: {...}` events) ending with `data: [DONE]`."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage | None = None


class CompletionChoice(_Response):
    index: int
    text: str
    finish_reason: str | None = None


class Completion(_Response):
    """A completion; with `stream: true`, a `text/event-stream` of `text_completion` chunks
    ending with `data: [DONE]`."""

    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


class Embedding(_Response):
    object: str = "embedding"
    index: int
    # floats, or base64 of little-endian float32 with `encoding_format: base64`
    embedding: list[float] | str


class EmbeddingUsage(_Response):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(_Response):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage | None = None


class Transcription(_Response):
    """`response_format` json (and, with more fields, verbose_json); text, srt and vtt are
    `text/plain`."""

    text: str


class AttestationList(_Response):
    """Fresh evidence of each backend serving the domain, for the client's nonce."""

    object: str = "list"
    nonce: str
    data: list[dict[str, Any]]


class AttestationPolicyList(_Response):
    """The active attestation policy of each backend serving the domain."""

    object: str = "list"
    data: list[dict[str, Any]]
