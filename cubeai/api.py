"""The project's NinjaAPI: the OpenAI-compatible API and its one error handler."""

import logging
import traceback

import orjson
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cubeai import jsonbody
from cubeai.exceptions import DomainError
from inference.api import attestation_router, request_id_of, router
from inference.errors import InferenceError, RouteNotFound, ServiceUnavailable, envelope
from inference.jobs.api import router as jobs_router

log = logging.getLogger(__name__)


class JSONParser(Parser):
    """orjson for request bodies; a non-JSON content type is a 415, bad or too deeply nested
    JSON a 400."""

    def parse_body(self, request: HttpRequest):
        if request.content_type != "application/json":
            raise InferenceError(
                "Send the request body as application/json.",
                status=415,
                code="unsupported_media_type",
            )
        try:
            # An empty body is an empty object, so that the answer names the first
            # parameter missing (OpenAI's "Missing required parameter: 'model'").
            return jsonbody.loads(request.body or b"{}")
        except jsonbody.JSONBodyError as exc:
            raise InferenceError(str(exc), code="invalid_json") from None


class JSONRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request, data, *, response_status):
        return orjson.dumps(data)


class API(NinjaAPI):
    """Ninja's API, keeping of each invalid value its JSON type only (never the value, which
    may be content), and naming the first required parameter when the body is missing."""

    def validation_error_from_error_contexts(self, error_contexts) -> ValidationError:
        errors = []
        for context in error_contexts:
            model = context.model
            for error in context.pydantic_validation_error.errors(include_url=False):
                loc = model.__ninja_flatten_map_reverse__.get(error["loc"], error["loc"])
                got = JSON_TYPES.get(type(error.pop("input", None)), "another type")
                if error["type"] == "missing" and len(loc) == 1 and loc[0] in model.model_fields:
                    # No body at all: the first parameter its schema requires is missing.
                    schema = model.model_fields[loc[0]].annotation
                    required = [
                        n for n, f in getattr(schema, "model_fields", {}).items() if f.is_required()
                    ]
                    loc = (*loc, *required[:1])
                error.pop("ctx", None)
                errors.append({**error, "loc": (model.__ninja_param_source__, *loc), "got": got})
        return ValidationError(errors)


api = API(
    title="Cube AI OpenAI-compatible API",
    version="1.0.0",
    description=(
        "OpenAI's API, scoped to a domain: `https://<host>/proxy/<domain-id>/v1`, "
        "authenticated with `Authorization: Bearer <personal access token>`."
    ),
    urls_namespace="proxy",
    docs_url="/docs",
    openapi_url="/openapi.json",
    parser=JSONParser(),
    renderer=JSONRenderer(),
)
# Before the main router, whose catch-all answers unknown paths.
api.add_router("/{domain_id}/v1", jobs_router)
api.add_router("/{domain_id}/v1", router)
api.add_router("/{domain_id}", attestation_router)


def _envelope(request: HttpRequest, error: InferenceError) -> HttpResponse:
    """The one place an error of the OpenAI-compatible API becomes HTTP."""
    response = HttpResponse(
        orjson.dumps(envelope(error)), status=error.status, content_type="application/json"
    )
    for name, value in error.headers.items():
        response[name] = value
    response["x-request-id"] = request_id_of(request)
    return response


UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _param_of(loc: tuple) -> str | None:
    # Ninja prefixes the body's field path with the source and the parameter name.
    parts = [str(p) for p in loc]
    if parts[:1] == ["body"]:
        parts = parts[2:] if len(parts) > 1 and parts[1] == "body" else parts[1:]
    # pydantic names the member of a union a value failed (`stop.str`): not a parameter.
    parts = [p for p in parts if p not in UNION_MEMBERS and "[" not in p]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or None


# pydantic's type errors, as OpenAI names the type expected and the one received.
EXPECTED = {
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a decimal",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
}
JSON_TYPES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    param = _param_of(tuple(first.get("loc", ())))
    kind, code = first.get("type", ""), "invalid_value"
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "string_pattern_mismatch":
        message = f"Invalid value for '{param}': control characters are not allowed."
    elif kind in EXPECTED:
        # pydantic's strict mode: the value is of the wrong JSON type (OpenAI's wording).
        got = first.get("got", "another type")
        message = f"Invalid type for '{param}': expected {EXPECTED[kind]}, but got {got} instead."
        code = "invalid_type"
    else:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    return _envelope(request, InferenceError(message, param=param, code=code))


# CSRF-exempt as the API's own views are (a token client has no CSRF cookie): without it,
# a write to an unknown path got Django's HTML 403 instead of this 404.
@csrf_exempt
async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /proxy/ (`/proxy/<domain>/v2/...`, `/proxy/x`): a 404 in OpenAI's
    envelope, whatever the method (`cubeai.urls` routes here after the API's own paths)."""
    return _envelope(request, RouteNotFound())


@api.exception_handler(DomainError)
def on_domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    # Inference errors, and the services' (not found, permission denied...).
    return _envelope(request, InferenceError.from_domain_error(exc))


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    error = InferenceError(
        "Invalid or missing personal access token. Send `Authorization: Bearer <token>`.",
        status=401,
        code="invalid_api_key",
        headers={"WWW-Authenticate": 'Bearer realm="cube-ai"'},
    )
    return _envelope(request, error)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # Ninja wraps the parser's errors; the error it raised carries the real answer.
    if isinstance(exc.__cause__, InferenceError):
        return _envelope(request, exc.__cause__)
    return _envelope(request, InferenceError(str(exc.message), status=exc.status_code))


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _envelope(request, RouteNotFound())


def on_outage(request: HttpRequest, exc: Exception) -> HttpResponse:
    # PostgreSQL or Redis away (a restart, a failover): a clean 503 to retry, not a 500.
    log.warning("%s in %s: the database or Redis is unreachable", type(exc).__name__, request.path)
    return _envelope(request, ServiceUnavailable())


for _outage in (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError):
    api.add_exception_handler(_outage, on_outage)


@api.exception_handler(Exception)
def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The type and the frames only: an exception's message may quote request content.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s in %s\n%s", type(exc).__name__, request.path, frames)
    return _envelope(
        request, InferenceError("The server had an error processing your request.", status=500)
    )
