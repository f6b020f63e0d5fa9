"""JSON request bodies, parsed once for both APIs with their nesting depth bounded.

orjson parses up to 1,024 levels but encodes only 254: a body nested between the two passed
validation and failed when it was re-encoded for the backend (a 500). Every JSON body, of the
OpenAI-compatible API and of the management API, is parsed here and refused past
`CUBEAI_MAX_JSON_DEPTH` levels, so nothing deeper ever reaches a view.
"""

import orjson
from django.conf import settings


class JSONBodyError(ValueError):
    """A body that is not JSON, or nested too deeply; the message says which."""


def too_deep(value, limit: int) -> bool:
    """Whether `value` nests objects and arrays more than `limit` levels deep (iterative, so
    the check itself never recurses)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(body: bytes | str):
    """The parsed body; JSONBodyError when it is not JSON or is nested too deeply."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            raise JSONBodyError(_too_deep_message()) from None
        raise JSONBodyError(
            "We could not parse the JSON body of your request. It must be valid JSON."
        ) from None
    if too_deep(value, settings.CUBEAI_MAX_JSON_DEPTH):
        raise JSONBodyError(_too_deep_message())
    return value


def _too_deep_message() -> str:
    return (
        "The JSON body of your request is nested too deeply: at most "
        f"{settings.CUBEAI_MAX_JSON_DEPTH} levels of objects and arrays."
    )


class DRFJSONParser:
    """The management API's JSON parser (Django REST framework's, bounded the same way)."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        from rest_framework.exceptions import ParseError

        try:
            return loads(stream.read() if stream is not None else b"")
        except JSONBodyError as exc:
            raise ParseError(str(exc)) from None
