"""Transcription jobs in the OpenAI-compatible API (a Cube AI extension of OpenAI's API):

    POST   /audio/transcriptions/jobs                 202, the job (OpenAI's multipart + `task`)
    GET    /audio/transcriptions/jobs                 the caller's jobs, newest first (cursor)
    GET    /audio/transcriptions/jobs/{id}            the job
    GET    /audio/transcriptions/jobs/{id}/result     ?format=txt|srt|vtt|json
    DELETE /audio/transcriptions/jobs/{id}            cancel (409 once finished)

Same auth and envelope as the rest of `/proxy/<domain-id>/v1`. A job is its creator's: any
other id (another member's, another domain's) is a 404. Every request counts as one against
the caller's request limits before anything else is read (an upload refused with 429 is never
parsed or stored), and every answer carries the `x-ratelimit-*` headers.
"""

import functools

import orjson
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import Path, Router

from cubeai.exceptions import DomainError, PermissionDenied
from domains import permissions
from inference import pipeline
from inference.api import ERRORS, PATBearer, audio_upload, request_id_of
from inference.context import Caller
from inference.errors import InferenceError
from inference.jobs import formats, services
from inference.jobs.models import TranscriptionJob

router = Router(auth=PATBearer(), tags=["Transcription jobs (Cube AI extension)"])
JOBS = "/audio/transcriptions/jobs"
AUDIO_PERMISSIONS = (permissions.AUDIO_TRANSCRIPTIONS, permissions.AUDIO_TRANSLATIONS)
NEEDS_EITHER = "Needs `audio:transcriptions` or `audio:translations` (a Cube AI extension)."


def _db(function):
    return sync_to_async(function, thread_sensitive=True)


def _json(body, request: HttpRequest, status: int = 200) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    response["x-request-id"] = request_id_of(request)
    return response


def _limited(view):
    """Admit the request through the limits gate first (one request, no tokens, as for the
    model list), and put its `x-ratelimit-*` headers on the answer, an error's too."""

    @functools.wraps(view)
    async def admitted(request: HttpRequest, *args, **kwargs):
        limits = await pipeline.admit_request(request.auth)
        try:
            response = await view(request, *args, **kwargs)
        except DomainError as error:
            error.headers = {**limits, **error.headers}
            raise
        for name, value in limits.items():
            response[name] = value
        return response

    return admitted


def _require_audio(caller: Caller) -> None:
    if not any(p in caller.permissions for p in AUDIO_PERMISSIONS):
        raise PermissionDenied(
            "Your token or role allows neither `audio:transcriptions` nor `audio:translations` "
            "in this domain."
        )


CREATE_DOC = {
    "description": (
        "Queue a transcription (or, with `task=translate`, a translation into English) of an "
        "audio file; answers 202 with the job. A Cube AI extension of OpenAI's API: the same "
        "multipart fields as `POST /audio/transcriptions`, plus `task`. Needs "
        "`audio:transcriptions` (`audio:translations` for `task=translate`)."
    ),
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string"},
                        "task": {"type": "string", "enum": ["transcribe", "translate"]},
                        "language": {"type": "string"},
                        "prompt": {"type": "string"},
                        "response_format": {
                            "type": "string",
                            "enum": ["json", "text", "srt", "verbose_json", "vtt"],
                            "description": "the default format of the result",
                        },
                        "temperature": {"type": "number"},
                    },
                }
            }
        }
    },
}


@router.api_operation(
    ["POST"],
    JOBS,
    response={202: dict, **ERRORS},
    openapi_extra=CREATE_DOC,
    summary="Create a transcription job",
)
@_limited
async def job_create(request: HttpRequest, domain_id: Path[str]):
    caller: Caller = request.auth
    upload, fields = audio_upload(request, extra=frozenset({"task"}))
    task = request.POST.get("task", TranscriptionJob.Task.TRANSCRIBE)
    if task not in TranscriptionJob.Task.values:
        raise InferenceError("`task` must be `transcribe` or `translate`.", param="task")
    translate = task == TranscriptionJob.Task.TRANSLATE
    if translate and fields.get("language"):
        raise InferenceError(
            "`language` is not used for translations (the output is English).", param="language"
        )
    content_type = services.audio_content_type(upload)
    await pipeline.check_audio_job(request.auth, translate=translate, model=fields["model"])
    options = {k: fields[k] for k in ("prompt", "temperature") if k in fields}
    job = await _db(services.job_create)(
        domain_id=caller.domain_id,
        owner_id=caller.user_id,
        token_id=caller.token_id,
        model=fields["model"],
        task=task,
        language=fields.get("language", ""),
        response_format=fields["response_format"],
        options=options,
        filename=upload.name or "audio",
        content_type=content_type,
        size=upload.size,
        chunks=upload.chunks(),
        request_id=request_id_of(request),
    )
    # An open transcription page draws the job while it waits (the worker reports the rest).
    await _publish(job)
    return _json(services.job_object(job), request, status=202)


@router.api_operation(
    ["GET"],
    JOBS,
    response={200: dict, **ERRORS},
    summary="List your transcription jobs",
    description=f"Newest first; `limit` (1-100, default 20) and the cursor `after` (a job id). "
    f"{NEEDS_EITHER}",
)
@_limited
async def job_list(request: HttpRequest, domain_id: Path[str], limit: int = 20, after: str = ""):
    caller: Caller = request.auth
    _require_audio(caller)
    if not 1 <= limit <= 100:
        raise InferenceError("`limit` must be between 1 and 100.", param="limit")
    jobs, has_more = await _db(services.job_list)(
        domain_id=caller.domain_id, owner_id=caller.user_id, limit=limit, after=after or None
    )
    data = [services.job_object(job) for job in jobs]
    body = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
    return _json(body, request)


@router.api_operation(
    ["GET"],
    JOBS + "/{job_id}",
    response={200: dict, **ERRORS},
    summary="Retrieve a transcription job",
    description=NEEDS_EITHER,
)
@_limited
async def job_retrieve(request: HttpRequest, domain_id: Path[str], job_id: str):
    caller: Caller = request.auth
    _require_audio(caller)
    job = await _db(services.job_get)(
        domain_id=caller.domain_id, owner_id=caller.user_id, job_id=job_id
    )
    return _json(services.job_object(job), request)


@router.api_operation(
    ["GET"],
    JOBS + "/{job_id}/result",
    response={200: dict, **ERRORS},
    summary="Download a transcription job's result",
    description="`format`: `txt`, `srt`, `vtt` or `json` (text, language, duration and "
    "segments); by default the job's `response_format`. 409 until the job has succeeded. "
    + NEEDS_EITHER,
)
@_limited
async def job_result(request: HttpRequest, domain_id: Path[str], job_id: str, format: str = ""):
    caller: Caller = request.auth
    _require_audio(caller)
    job = await _db(services.job_get)(
        domain_id=caller.domain_id, owner_id=caller.user_id, job_id=job_id
    )
    return result_response(job, format, request_id_of(request))


def result_response(job: TranscriptionJob, fmt: str, request_id: str = "") -> HttpResponse:
    """The job's transcript as a download (shared with the page)."""
    fmt = fmt or formats.DEFAULT_FOR.get(job.response_format, "json")
    if fmt not in formats.FORMATS:
        raise InferenceError("`format` must be txt, srt, vtt or json.", param="format")
    if job.status != TranscriptionJob.Status.SUCCEEDED or job.result is None:
        raise InferenceError(
            f"The job is {job.status}; its result exists once it has succeeded.",
            status=409,
            code="job_not_succeeded",
        )
    response = HttpResponse(formats.render(job.result, fmt), content_type=formats.FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="transcript-{job.pk.hex[:12]}.{fmt}"'
    if request_id:
        response["x-request-id"] = request_id
    return response


@router.api_operation(
    ["DELETE"],
    JOBS + "/{job_id}",
    response={200: dict, **ERRORS},
    summary="Cancel a transcription job",
    description="Cancels a queued or running job (its audio is deleted at once); 409 once it "
    "has finished. " + NEEDS_EITHER,
)
@_limited
async def job_cancel(request: HttpRequest, domain_id: Path[str], job_id: str):
    caller: Caller = request.auth
    _require_audio(caller)
    job = await _db(services.job_cancel)(
        domain_id=caller.domain_id, owner_id=caller.user_id, job_id=job_id
    )
    await _publish(job)
    return _json(services.job_object(job), request)


async def _publish(job: TranscriptionJob) -> None:
    from inference.jobs import progress

    await progress.publish(job)


def _method_not_allowed(path: str, allowed: list[str]) -> None:
    others = [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE") if m not in allowed]
    allow = ", ".join(allowed)

    def refuse(request: HttpRequest):
        raise InferenceError(
            f"Method {request.method} is not allowed here; use {allow}.",
            status=405,
            code="method_not_allowed",
            headers={"Allow": allow},
        )

    async def not_allowed(request: HttpRequest):
        refuse(request)

    async def not_allowed_job(request: HttpRequest, job_id: str):
        refuse(request)

    view = not_allowed_job if "{job_id}" in path else not_allowed
    router.api_operation(others, path, auth=None, include_in_schema=False)(view)


_method_not_allowed(JOBS, ["GET", "POST"])
_method_not_allowed(JOBS + "/{job_id}", ["GET", "DELETE"])
_method_not_allowed(JOBS + "/{job_id}/result", ["GET"])
