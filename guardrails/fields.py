"""Every text of a request or a response that reaches a model or a client, and where it sits.

One list, used by the input and the output checks alike, so that no field escapes the
guardrails by being forgotten in one of them. Each text comes with its path in the JSON
body, so masking writes the masked text back into the same field (`with_texts`).

Request texts, by kind of endpoint:

- `chat`: each message's `content` (a string, or each `text` part; media parts carry no
  text, any other part type is refused), `name`, `refusal`, each
  `tool_calls[].function.name` and `.arguments`, the legacy `function_call`; each tool
  definition's `function.name`, `description` and every string in `parameters`; every
  string in `response_format`'s JSON schema;
- `completion`: `prompt` (a string or a list of strings) and `suffix`;
- `embedding`: `input` (a string or a list of strings);
- `audio`: `prompt`.

Token-id prompts and inputs (lists of integers) carry no text the checks can read; a
policy refuses them (the default) or passes them (`tokenized_inputs: "allow"`).

Response texts (`response_texts`): each choice's `message` (a stream's `delta`) `content`,
`refusal` and `tool_calls[].function.arguments`, and a completion choice's `text`. Log
probabilities repeat the content token by token and are masked with it (`mask_logprobs`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from guardrails.base import Action, Segment, Severity, Violation

Path = tuple[str | int, ...]

# Content parts that carry media, not text.
MEDIA_PARTS = frozenset({"image_url", "input_audio", "video_url", "file"})
# Texts that are not a message's content come from the client like a user's words, so
# every check that reads user text reads them.
CLIENT = "user"
KINDS = ("chat", "completion", "embedding", "audio")


def request_segments(
    kind: str, payload: Mapping[str, Any], *, tokenized_inputs: str = "block"
) -> tuple[list[Segment], list[Violation]]:
    """The texts of a request with their places, and structure violations (blocking)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of request {kind!r}")
    segments: list[Segment] = []
    violations: list[Violation] = []
    if kind == "chat":
        messages = payload.get("messages")
        if not isinstance(messages, list):
            violations.append(_structure("structure.invalid"))
        else:
            for index, message in enumerate(messages):
                _message(index, message, segments, violations)
        for index, tool in enumerate(payload.get("tools") or ()):
            _strings(("tools", index), tool, segments)
        if isinstance(payload.get("response_format"), dict):
            _strings(("response_format",), payload["response_format"], segments)
    elif kind == "completion":
        _prompt("prompt", payload.get("prompt"), segments, violations, tokenized_inputs)
        if isinstance(payload.get("suffix"), str):
            segments.append(_field(("suffix",), payload["suffix"]))
    elif kind == "embedding":
        _prompt("input", payload.get("input"), segments, violations, tokenized_inputs)
    elif isinstance(payload.get("prompt"), str):
        segments.append(_field(("prompt",), payload["prompt"]))
    return segments, violations


def _message(
    index: int, message: Any, segments: list[Segment], violations: list[Violation]
) -> None:
    if not isinstance(message, dict):
        violations.append(_structure("structure.unscannable", index))
        return
    role = message.get("role") if isinstance(message.get("role"), str) else ""
    content = message.get("content")
    if isinstance(content, str):
        segments.append(Segment(index, None, role, content, ("messages", index, "content")))
    elif isinstance(content, list):
        for part_index, part in enumerate(content):
            path = ("messages", index, "content", part_index, "text")
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                violations.append(_structure("structure.invalid", index, part_index))
            elif part["type"] in ("text", "refusal"):
                key = part["type"]
                if isinstance(part.get(key), str):
                    segments.append(Segment(index, part_index, role, part[key], (*path[:-1], key)))
                else:
                    violations.append(_structure("structure.invalid", index, part_index))
            elif part["type"] not in MEDIA_PARTS:
                # A part that may carry text the checks cannot see is refused, not passed on.
                violations.append(_structure("structure.unscannable", index, part_index))
    elif content is not None:
        violations.append(_structure("structure.invalid", index))
    for key in ("name", "refusal"):
        if isinstance(message.get(key), str):
            segments.append(_field(("messages", index, key), message[key], index))
    for call_index, call in enumerate(message.get("tool_calls") or ()):
        _strings(("messages", index, "tool_calls", call_index), call, segments, index)
    if isinstance(message.get("function_call"), dict):
        _strings(("messages", index, "function_call"), message["function_call"], segments, index)


def _prompt(
    key: str,
    value: Any,
    segments: list[Segment],
    violations: list[Violation],
    tokenized_inputs: str,
) -> None:
    if isinstance(value, str):
        segments.append(Segment(0, None, CLIENT, value, (key,)))
        return
    if not isinstance(value, list):
        violations.append(_structure("structure.invalid"))
        return
    for index, item in enumerate(value):
        if isinstance(item, str):
            segments.append(Segment(index, None, CLIENT, item, (key, index)))
        elif _is_token_ids(item) and tokenized_inputs == "allow":
            continue
        elif _is_token_ids(item):
            violations.append(_structure("structure.token_ids", index))
            # One violation says it all: the whole list is token ids.
            if all(isinstance(i, int) for i in value):
                return
        else:
            violations.append(_structure("structure.unscannable", index))


def _is_token_ids(item: Any) -> bool:
    return isinstance(item, int) or (
        isinstance(item, list) and all(isinstance(i, int) for i in item)
    )


def _strings(path: Path, value: Any, segments: list[Segment], message: int | None = None) -> None:
    """Every string inside a JSON value (tool definitions, schemas, tool-call arguments)."""
    for where, text in _walk(path, value):
        segments.append(_field(where, text, message))


def _walk(path: Path, value: Any) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk((*path, key), item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk((*path, index), item)


def _field(path: Path, text: str, message: int | None = None) -> Segment:
    return Segment(message, None, CLIENT, text, path, field=path_name(path))


def path_name(path: Path) -> str:
    """`("tools", 0, "function", "description")` -> `tools[0].function.description`."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name


def _structure(type_: str, message: int | None = None, part: int | None = None) -> Violation:
    return Violation(type_, "structure", Severity.MEDIUM, Action.BLOCK, "structure", message, part)


def with_texts(payload: Any, texts: Mapping[Path, str]) -> Any:
    """A copy of `payload` with each path's text replaced; the input is never modified."""
    if not texts:
        return payload
    result = copy.deepcopy(payload)
    for path, text in texts.items():
        if not path:
            result = text
            continue
        holder = result
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = text
    return result


def response_texts(choice: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
    """The texts of one response choice, whole (`message`) or streamed (`delta`), with their
    paths in the choice: content, refusal, tool-call arguments; a completion's `text`."""
    if isinstance(choice.get("text"), str):
        yield ("text",), choice["text"]
    for holder in ("message", "delta"):
        body = choice.get(holder)
        if not isinstance(body, dict):
            continue
        for key in ("content", "refusal"):
            if isinstance(body.get(key), str):
                yield (holder, key), body[key]
        for position, call in enumerate(body.get("tool_calls") or ()):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                # A stream's tool-call deltas carry the call's own index.
                index = call.get("index", position)
                yield (holder, "tool_calls", index, "function", "arguments"), function["arguments"]


def mask_logprobs(entries: list[dict], masked: list[tuple[int, int]], start: int = 0) -> None:
    """Mask log-probability entries, in place, where the text they spell was masked.

    `entries` are chat `logprobs.content` items (`token`, `bytes`, `top_logprobs`) whose
    tokens, laid end to end from offset `start`, spell the text that `masked` (spans of
    that text) refers to. An entry that overlaps a masked span loses its token, bytes and
    alternatives, which would otherwise spell the secret out one token at a time.
    """
    offset = start
    for entry in entries:
        token = entry.get("token") if isinstance(entry, dict) else None
        if not isinstance(token, str):
            continue
        end = offset + len(token)
        if any(a < end and offset < b for a, b in masked):
            entry["token"] = ""
            entry["bytes"] = []
            entry["top_logprobs"] = []
        offset = end


def mask_completion_logprobs(logprobs: dict, masked: list[tuple[int, int]], start: int = 0) -> None:
    """The same for a completion's `logprobs` (`tokens`, `top_logprobs`, `text_offset`)."""
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list):
        return
    top = logprobs.get("top_logprobs")
    offset = start
    for index, token in enumerate(tokens):
        if not isinstance(token, str):
            continue
        end = offset + len(token)
        if any(a < end and offset < b for a, b in masked):
            tokens[index] = ""
            if isinstance(top, list) and index < len(top):
                top[index] = {}
        offset = end
