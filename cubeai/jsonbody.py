"""JSON request bodies, parsed once for both APIs with their nesting depth bounded.

orjson parses up to 1,024 levels but encodes only 254: a body nested between the two passed
validation and failed when it was re-encoded for the backend (a 500). Every JSON body, of the
OpenAI-compatible API and of the management API, is parsed here and refused past
`CUBEAI_MAX_JSON_DEPTH` levels, so nothing deeper ever reaches a view.

JSON given inside a string or typed into a form field goes through the same `loads` (the
form field, the decoder and the admin overrides below; DRF's in `domains.drf.JSONField`):
the standard library's parser recurses and raised RecursionError, a 500, near 1,000 levels.
"""

import json

import orjson
from django import forms
from django.conf import settings
from django.db import models


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


BODY = "body of your request"


def loads(body: bytes | str, *, what: str = BODY):
    """The parsed body; JSONBodyError when it is not JSON or is nested too deeply. `what`
    names the JSON in the messages (a form field's or string field's value)."""
    if isinstance(body, str) and type(body) is not str:
        body = str(body)  # orjson takes no subclass of str (DRF's and Django's JSONString)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            raise JSONBodyError(_too_deep_message(what)) from None
        if what == BODY:
            # OpenAI's own words for a body.
            raise JSONBodyError(
                "We could not parse the JSON body of your request. It must be valid JSON."
            ) from None
        raise JSONBodyError(f"This {what} is not valid JSON: {exc}.") from None
    if too_deep(value, settings.CUBEAI_MAX_JSON_DEPTH):
        raise JSONBodyError(_too_deep_message(what))
    return value


def _too_deep_message(what: str) -> str:
    return (
        f"The JSON {what} is nested too deeply: at most "
        f"{settings.CUBEAI_MAX_JSON_DEPTH} levels of objects and arrays."
    )


class JSONDecoder(json.JSONDecoder):
    """`loads` behind the standard library's decoder interface, for every JSON typed into a
    form field or sent as a string: the standard parser recurses, so about 1,000 levels
    raised RecursionError (a 500) where the fields expect a JSONDecodeError."""

    def decode(self, s, _w=None):
        try:
            return loads(s, what="value")
        except JSONBodyError as exc:
            raise json.JSONDecodeError(str(exc), s if isinstance(s, str) else "", 0) from None


class JSONFormField(forms.JSONField):
    """Django's JSON form field parsed by `loads`, its errors saying what was wrong."""

    def __init__(self, **kwargs):
        if kwargs.get("decoder") is None:
            kwargs["decoder"] = JSONDecoder
        super().__init__(**kwargs)

    def to_python(self, value):
        if (
            not self.disabled
            and isinstance(value, str)
            and not isinstance(value, forms.fields.JSONString)
            and value not in self.empty_values
        ):
            try:
                loads(value, what="value")
            except JSONBodyError as exc:
                raise forms.ValidationError(str(exc), code="invalid") from None
        return super().to_python(value)


# A ModelAdmin's `formfield_overrides`: its model's JSON fields parsed by `loads` too.
ADMIN_FORMFIELDS = {models.JSONField: {"form_class": JSONFormField}}


class DRFJSONParser:
    """The management API's JSON parser (Django REST framework's, bounded the same way)."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        from rest_framework.exceptions import ParseError

        try:
            return loads(stream.read() if stream is not None else b"")
        except JSONBodyError as exc:
            raise ParseError(str(exc)) from None
