"""The multipart/form-data bodies of the audio endpoints, read with every error answered.

Django parses a multipart body lazily, the first time `request.POST` or `request.FILES` is
touched, and raises its parser's errors there: a missing, empty or over-long boundary, more
than DATA_UPLOAD_MAX_NUMBER_FIELDS fields or DATA_UPLOAD_MAX_NUMBER_FILES files, a text field
over DATA_UPLOAD_MAX_MEMORY_SIZE, bad part headers, a body cut short (`cubeai.bodies`).
`multipart_parse` parses at once, before anything is routed or forwarded, and answers each
with a 400 in OpenAI's envelope.
"""

from django.conf import settings
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError

from inference.errors import InferenceError


def _refusal(exc: Exception) -> InferenceError:
    if isinstance(exc, TooManyFieldsSent):
        message = f"The form has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields."
    elif isinstance(exc, TooManyFilesSent):
        message = f"The form has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files."
    elif isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / (1024 * 1024)
        message = f"The form's text fields exceed {limit:g} MB."
    elif isinstance(exc, MultiPartParserError):
        # Django's reasons name the part at fault; a client's boundary is cut to a sane length.
        message = f"The multipart/form-data body is malformed: {str(exc)[:120]}"
    else:
        message = "The multipart/form-data body is malformed."
    return InferenceError(message, code="invalid_multipart")


def multipart_parse(request: HttpRequest) -> None:
    """Parse `request`'s multipart body now; `request.POST` and `request.FILES` then hold it.

    Raises InferenceError (400) for any malformed body, with nothing read into the request.
    """
    try:
        request.FILES  # noqa: B018 -- touching it parses the body, the point of this call.
    except (MultiPartParserError, SuspiciousOperation) as exc:
        raise _refusal(exc) from None
