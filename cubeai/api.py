"""The project's NinjaAPI: the OpenAI-compatible API and its one error handler."""

import logging
import traceback

import orjson
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer

from cubeai.exceptions import DomainError
from inference.api import attestation_router, request_id_of, router
from inference.errors import InferenceError, RouteNotFound, envelope
from inference.jobs.api import router as jobs_router

log = logging.getLogger(__name__)


class JSONParser(Parser):
    """orjson for request bodies; a non-JSON content type is a 415, bad JSON a 400."""

    def parse_body(self, request: HttpRequest):
        if request.content_type != "application/json":
            raise InferenceError(
                "Send the request body as application/json.",
                status=415,
                code="unsupported_media_type",
            )
        try:
            return orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise InferenceError(
                "We could not parse the JSON body of your request. It must be valid JSON.",
                code="invalid_json",
            ) from None


class JSONRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request, data, *, response_status):
        return orjson.dumps(data)


api = NinjaAPI(
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


def _param_of(loc: tuple) -> str | None:
    # Ninja prefixes the body's field path with the source and the parameter name.
    parts = [str(p) for p in loc]
    if parts[:1] == ["body"]:
        parts = parts[2:] if len(parts) > 1 and parts[1] == "body" else parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or None


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    param = _param_of(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    return _envelope(request, InferenceError(message, param=param, code="invalid_value"))


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


@api.exception_handler(Exception)
def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The type and the frames only: an exception's message may quote request content.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s in %s\n%s", type(exc).__name__, request.path, frames)
    return _envelope(
        request, InferenceError("The server had an error processing your request.", status=500)
    )
