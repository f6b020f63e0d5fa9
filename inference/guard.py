"""The guardrails step of the pipeline: the domain's policy on every text of a call.

Input: every text a request carries to the model (`guardrails.fields` lists them for each
kind of endpoint) is checked; the call is refused (`ContentFiltered`) or goes on with the
masked texts written back in place. Output: every text a response carries to the client
(content, refusal, tool-call arguments, and the log probabilities that spell them out) is
masked or withheld, whole or streamed. Nothing a client sends can switch any of it off.
Decisions reach the audit event as types and counts only.
"""

from collections.abc import Iterator
from typing import Any

from guardrails import Classify, Pipeline
from guardrails.fields import (
    Path,
    mask_completion_logprobs,
    mask_logprobs,
    request_segments,
    response_texts,
)
from inference.errors import ContentFiltered
from inference.registry import registry

__all__ = ["StreamGuard", "carries_text", "check_request", "check_response", "response_texts"]


def pipeline_for(domain_id: str) -> Pipeline:
    """The compiled pipeline of the domain's active policy (or the platform default)."""
    return registry.guardrails_for(domain_id)


async def check_request(call, params: dict, *, classify: Classify) -> dict:
    """Block (`ContentFiltered`) or mask the request; returns the parameters to forward."""
    pipeline = pipeline_for(call.caller.domain_id)
    kind = call.endpoint.kind
    if pipeline.needs_async:
        decision = await pipeline.acheck_request(kind, params, classify=classify)
    else:
        decision = pipeline.check_request(kind, params)
    call.guardrails["input"] = decision.audit()
    call.guard_headers.update(decision.headers())
    if decision.blocked:
        raise ContentFiltered(
            decision.error()["error"]["message"], violations=list(decision.violation_types)
        )
    return decision.payload


def request_text(kind: str, params: dict) -> str:
    """All the text a request gives the model, for the gateway's own token estimate."""
    segments, _ = request_segments(kind, params, tokenized_inputs="allow")
    return "".join(segment.text for segment in segments)


def carries_text(choice: dict) -> bool:
    """Whether a streamed choice carries generated text (one token, as backends stream)."""
    return any(text for _, text in response_texts(choice))


def check_response(call, body: dict) -> None:
    """Mask or withhold each text of each choice of a whole response, in place."""
    pipeline = pipeline_for(call.caller.domain_id)
    audits: list[dict] = []
    masked: list[str] = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        for path, text in list(response_texts(choice)):
            decision = pipeline.check_output(text)
            audits.append(decision.audit())
            if decision.blocked:
                _put(choice, path, "")
                choice["finish_reason"] = "content_filter"
                continue
            if decision.text != text:
                _put(choice, path, decision.text)
                masked.extend(decision.masked_rails)
                if path[-1] == "content" or path == ("text",):
                    spans = [(v.start, v.end) for v in decision.violations if v.start is not None]
                    _mask_choice_logprobs(choice, spans)
        if choice.get("finish_reason") == "content_filter":
            # A withheld choice leaks nothing through its log probabilities either.
            _mask_choice_logprobs(choice, [(0, 1 << 62)])
    if audits:
        call.guardrails["output"] = audits
    _add_masked(call, masked)


def _mask_choice_logprobs(choice: dict, spans: list[tuple[int, int]]) -> None:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return
    if isinstance(logprobs.get("content"), list):
        mask_logprobs(logprobs["content"], spans)
    else:
        mask_completion_logprobs(logprobs, spans)


def _put(holder: Any, path: Path, value: str) -> None:
    for part in path[:-1]:
        holder = _child(holder, part)
    holder[path[-1]] = value


def _child(holder: Any, part: str | int) -> Any:
    if isinstance(holder, list) and isinstance(part, int):
        # Tool calls are addressed by their own `index` in streams, by position otherwise.
        for item in holder:
            if isinstance(item, dict) and item.get("index") == part:
                return item
        if any(isinstance(item, dict) and "index" in item for item in holder):
            raise KeyError(part)
    return holder[part]


def _add_masked(call, rails) -> None:
    if rails:
        existing = call.guard_headers.get("x-guardrails-masked", "")
        merged = dict.fromkeys([*filter(None, existing.split(",")), *rails])
        call.guard_headers["x-guardrails-masked"] = ",".join(merged)


class StreamGuard:
    """Output guardrails on a stream: one sanitizer per choice and per text field of it
    (content, refusal, each tool call's arguments), fed the deltas in order. Log
    probabilities are held with the text they spell and masked with it."""

    def __init__(self, call) -> None:
        self.call = call
        self.pipeline = pipeline_for(call.caller.domain_id)
        # (choice index, path in the choice) -> sanitizer
        self.sanitizers: dict[tuple[int, Path], Any] = {}
        # choice index -> log-probability entries not sent yet: (start, end, entry), where
        # start and end are offsets in the choice's text
        self.logprobs: dict[int, list[tuple[int, int, dict]]] = {}
        self.offsets: dict[int, int] = {}
        # choice index -> the log probabilities' format: a chat's or a completion's
        self.formats: dict[int, dict] = {}

    def sanitize(self, chunk: dict) -> bool:
        """Rewrite each choice's texts in place; True once a block fired. A choice's last
        chunk (with its `finish_reason`) carries everything still held for it."""
        blocked = False
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            for path, text in list(response_texts(choice)):
                sanitizer = self._sanitizer(index, path)
                _put(choice, path, sanitizer.feed(text))
                blocked = blocked or sanitizer.blocked
            finishing = bool(choice.get("finish_reason"))
            if finishing:
                for (owner, path), sanitizer in self.sanitizers.items():
                    if owner == index:
                        _append(choice, path, sanitizer.finish())
            self._logprobs(index, choice, finishing)
            if blocked:
                choice["finish_reason"] = "content_filter"
        return blocked

    def _sanitizer(self, index: int, path: Path):
        key = (index, path)
        sanitizer = self.sanitizers.get(key)
        if sanitizer is None:
            sanitizer = self.sanitizers[key] = self.pipeline.stream_sanitizer()
        return sanitizer

    def _text_sanitizer(self, index: int):
        return self.sanitizers.get((index, ("delta", "content"))) or self.sanitizers.get(
            (index, ("text",))
        )

    def _logprobs(self, index: int, choice: dict, finishing: bool) -> None:
        """Send a choice's log probabilities only as far as its text was released, masked
        where the text was (chat `logprobs.content`, or a completion's `logprobs.tokens`)."""
        logprobs = choice.get("logprobs")
        entries = _entries(logprobs)
        if entries is not None:
            self.formats.setdefault(index, logprobs)
            queue = self.logprobs.setdefault(index, [])
            offset = self.offsets.get(index, 0)
            for entry in entries:
                token = entry.get("token")
                end = offset + (len(token) if isinstance(token, str) else 0)
                queue.append((offset, end, entry))
                offset = end
            self.offsets[index] = offset
        queue = self.logprobs.get(index)
        if not queue:
            return
        text = self._text_sanitizer(index)
        released = text.released if text is not None and not finishing else 1 << 62
        ready = [item for item in queue if item[1] <= released]
        self.logprobs[index] = queue[len(ready) :]
        if ready:
            spans = [(0, 1 << 62)] if text is not None and text.blocked else []
            spans += text.masked if text is not None else []
            mask_logprobs([entry for *_, entry in ready], spans, start=ready[0][0])
        choice["logprobs"] = _logprobs_of(self.formats[index], [entry for *_, entry in ready])

    def tails(self, template: dict) -> Iterator[dict]:
        """What is still held when the backend ended without a finish chunk, as extra
        chunks shaped like `template`."""
        for index in sorted({owner for owner, _ in self.sanitizers} | set(self.logprobs)):
            choice: dict = {"index": index, "finish_reason": None}
            for (owner, path), sanitizer in self.sanitizers.items():
                if owner == index:
                    _append(choice, path, sanitizer.finish())
            self._logprobs(index, choice, finishing=True)
            if any(text for _, text in response_texts(choice)) or _entries(choice.get("logprobs")):
                yield {**template, "choices": [choice]}

    def audit(self) -> list[dict]:
        return [sanitizer.audit() for sanitizer in self.sanitizers.values()]


def _append(choice: dict, path: Path, rest: str) -> None:
    """Add held-back text to a choice at `path`, making the path in it if needed (tool
    calls as a list of items addressed by their `index`)."""
    if not rest:
        return
    holder = choice
    for position, part in enumerate(path[:-1]):
        if isinstance(part, int):
            continue
        following = path[position + 1]
        if isinstance(following, int):
            items = holder.setdefault(part, [])
            item = next(
                (i for i in items if isinstance(i, dict) and i.get("index") == following), None
            )
            if item is None:
                item = {"index": following}
                items.append(item)
            holder = item
        else:
            holder = holder.setdefault(part, {})
    holder[path[-1]] = (holder.get(path[-1]) or "") + rest


# A completion's log probabilities: parallel lists, one item per token.
_COLUMNS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


def _entries(logprobs: Any) -> list[dict] | None:
    """Log probabilities as one entry per token (`token`, ...), whatever their format."""
    if not isinstance(logprobs, dict):
        return None
    if isinstance(logprobs.get("content"), list):
        return [entry for entry in logprobs["content"] if isinstance(entry, dict)]
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list):
        return None
    columns = _COLUMNS[1:]
    return [
        {
            "token": token,
            **{
                name: logprobs[name][i]
                for name in columns
                if isinstance(logprobs.get(name), list) and i < len(logprobs[name])
            },
        }
        for i, token in enumerate(tokens)
    ]


def _logprobs_of(original: dict, entries: list[dict]) -> dict:
    """Entries back in the format of `original`; a masked entry's alternatives are gone."""
    if "content" in original:
        return {**original, "content": entries}
    rebuilt: dict = {"tokens": [entry["token"] for entry in entries]}
    for name in _COLUMNS[1:]:
        if name in original:
            values = [entry.get(name) for entry in entries]
            if name == "top_logprobs":
                # `mask_logprobs` empties a masked token's alternatives.
                values = [{} if value == [] else value for value in values]
            rebuilt[name] = values
    return {**original, **rebuilt}
