"""Guardrails on the inference path: the domain's policy applied to prompts and completions.

Every chat and completion request goes through here, from every entry point; nothing a
client sends can switch it off. Decisions reach the audit event as types and counts only.
"""

import orjson

from guardrails import Classification, Pipeline
from inference.errors import APIError
from inference.registry import registry

PROMPT_FIELDS = ("messages", "prompt")


def pipeline_for(domain_id: str) -> Pipeline:
    """The compiled pipeline of the domain's active policy (or the platform default)."""
    return registry.guardrails_for(domain_id)


def _classifier(call):
    """Bind model-based checks to the gateway's own routing: the guard model is a model."""
    from inference import service

    async def classify(text: str, model: str) -> Classification:
        guard_call = service.Call(
            caller=call.caller, endpoint=service.CHAT, request_id=call.request_id
        )
        _, candidates = await service.route(guard_call, model, check_permission=False)
        body = await service.forward_json(
            guard_call,
            candidates,
            {"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 8},
        )
        label = (body.get("choices") or [{}])[0].get("message", {}).get("content") or ""
        return Classification(
            label=label.strip().split()[0].lower() if label.strip() else "", score=1.0
        )

    return classify


async def check_request(call, payload: dict) -> dict:
    """Block (400 `content_filter`) or mask the prompt; returns the payload to forward."""
    field = "messages" if "messages" in payload else "prompt"
    pipeline = pipeline_for(call.caller.domain_id)
    if pipeline.needs_async:
        decision = await pipeline.acheck_input(payload[field], classify=_classifier(call))
    else:
        decision = pipeline.check_input(payload[field])
    call.guardrails["input"] = decision.audit()
    call.guard_headers.update(decision.headers())
    if decision.blocked:
        error = decision.error()["error"]
        raise APIError(
            400,
            error["message"],
            code="content_filter",
            extra={"violations": list(decision.violation_types)},
        )
    if decision.masked_rails:
        return {**payload, field: decision.messages}
    return payload


def check_completion(call, body: dict, text_of) -> None:
    """Mask or withhold each choice of a whole completion, in place."""
    pipeline = pipeline_for(call.caller.domain_id)
    audits = []
    masked: list[str] = []
    for choice in body.get("choices") or ():
        holder, key = text_of(choice)
        if holder is None or not isinstance(holder.get(key), str):
            continue
        decision = pipeline.check_output(holder[key])
        audits.append(decision.audit())
        if decision.blocked:
            holder[key] = ""
            choice["finish_reason"] = "content_filter"
        else:
            holder[key] = decision.text
            masked.extend(decision.masked_rails)
    if audits:
        call.guardrails["output"] = audits
    _add_masked(call, masked)


def _add_masked(call, rails) -> None:
    if rails:
        existing = call.guard_headers.get("x-guardrails-masked", "")
        merged = dict.fromkeys([*filter(None, existing.split(",")), *rails])
        call.guard_headers["x-guardrails-masked"] = ",".join(merged)


class StreamGuard:
    """Output guardrails for each choice of a stream, applied to the deltas in order."""

    def __init__(self, call) -> None:
        self.call = call
        self.pipeline = pipeline_for(call.caller.domain_id)
        self.by_choice: dict[int, object] = {}

    def sanitize(self, chunk: dict, text_of) -> bool:
        """Rewrite each choice's text delta in place; True once a block fired."""
        blocked = False
        for choice in chunk.get("choices") or ():
            holder, key = text_of(choice)
            if holder is None:
                continue
            index = choice.get("index", 0)
            sanitizer = self.by_choice.get(index)
            if sanitizer is None:
                sanitizer = self.by_choice[index] = self.pipeline.stream_sanitizer()
            text = sanitizer.feed(holder.get(key) or "")
            if choice.get("finish_reason"):
                text += sanitizer.finish()
            holder[key] = text
            if sanitizer.blocked:
                choice["finish_reason"] = "content_filter"
                blocked = True
        return blocked

    def tails(self, template: dict, text_of) -> list[bytes]:
        """Flush what each sanitizer still holds, as extra chunks shaped like `template`."""
        events = []
        for index, sanitizer in self.by_choice.items():
            rest = sanitizer.finish()
            if rest:
                choice = {"index": index, "delta": {"content": rest}, "finish_reason": None}
                if text_of(choice)[1] == "text":
                    choice = {"index": index, "text": rest, "finish_reason": None}
                events.append(b"data: " + orjson.dumps({**template, "choices": [choice]}) + b"\n\n")
        return events

    def audit(self) -> list[dict]:
        return [sanitizer.audit() for sanitizer in self.by_choice.values()]
