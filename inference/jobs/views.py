"""The transcription page of a domain: `/domains/<id>/transcriptions/`.

Upload audio (any format the agent decodes, up to `CUBEAI_MAX_AUDIO_BYTES`), choose the
model, language, task and output format; the member's jobs with a live progress bar (the
page's WebSocket, `consumers.py`), the transcript once done, downloads and cancel. Jobs made
here run with the member's role (no token); the same services and pipeline as the API.
"""

import uuid

from asgiref.sync import async_to_sync
from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cubeai.exceptions import Conflict, DomainError, PermissionDenied
from domains import permissions
from domains.decorators import domain_page
from inference import access, pipeline
from inference.context import Caller
from inference.jobs import formats, services
from inference.jobs.api import result_response
from inference.jobs.models import TranscriptionJob
from inference.models import Model

AUDIO_PERMISSIONS = (permissions.AUDIO_TRANSCRIPTIONS, permissions.AUDIO_TRANSLATIONS)
OUTPUT_FORMATS = [
    ("text", "Text (.txt)"),
    ("srt", "SubRip (.srt)"),
    ("vtt", "WebVTT (.vtt)"),
    ("verbose_json", "JSON with segments (.json)"),
]


def audio_models(domain) -> list[str]:
    """The domain's models that transcribe or translate."""
    allowed = {row.name for row in access.model_access_list(domain=domain) if row.allowed}
    return [
        model.name
        for model in Model.objects.filter(name__in=allowed).order_by("name")
        if {"transcription", "translation"} & set(model.tasks or ())
    ]


class JobForm(forms.Form):
    file = forms.FileField(label="Audio file")
    model = forms.ChoiceField()
    task = forms.ChoiceField(
        choices=[("transcribe", "Transcribe"), ("translate", "Translate into English")]
    )
    language = forms.CharField(
        required=False, max_length=16, help_text="ISO-639-1 code such as en or de; empty: detect."
    )
    response_format = forms.ChoiceField(label="Output format", choices=OUTPUT_FORMATS)

    def __init__(self, *args, models: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(name, name) for name in models]


def _require_audio(request: HttpRequest) -> None:
    if not any(p in request.granted for p in AUDIO_PERMISSIONS):
        raise PermissionDenied(
            "This needs the audio:transcriptions or audio:translations permission."
        )


def _page(request: HttpRequest, form: JobForm, *, status: int = 200) -> HttpResponse:
    jobs = TranscriptionJob.objects.filter(domain=request.domain, owner=request.user)[:50]
    # Drawn into a <template>: the page's script makes a job made elsewhere from it.
    placeholder = TranscriptionJob(id=uuid.UUID(int=0), domain=request.domain)
    context = {
        "domain": request.domain,
        "form": form,
        "jobs": jobs,
        "placeholder": placeholder,
        "max_bytes": settings.CUBEAI_MAX_AUDIO_BYTES,
        "max_mb": settings.CUBEAI_MAX_AUDIO_BYTES / (1024 * 1024),
        "retention_days": settings.CUBEAI_TRANSCRIPTION_RESULT_DAYS,
        "formats": list(formats.FORMATS),
    }
    return render(request, "inference/transcriptions.html", context, status=status)


@domain_page()
@require_http_methods(["GET", "POST"])
def transcriptions(request: HttpRequest) -> HttpResponse:
    _require_audio(request)
    models = audio_models(request.domain)
    if request.method == "GET":
        return _page(request, JobForm(models=models))
    form = JobForm(request.POST, request.FILES, models=models)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    upload = data["file"]
    caller = Caller(
        token_id=None,
        user_id=request.user.pk,
        key_id="",
        domain_id=str(request.domain.pk),
        permissions=request.granted,
    )
    translate = data["task"] == "translate"
    try:
        content_type = services.audio_content_type(upload)
        async_to_sync(pipeline.check_audio_job)(caller, translate=translate, model=data["model"])
        services.job_create(
            domain_id=caller.domain_id,
            owner_id=caller.user_id,
            token_id=None,
            model=data["model"],
            task=data["task"],
            language="" if translate else data["language"].strip().lower(),
            response_format=data["response_format"],
            options={},
            filename=upload.name or "audio",
            content_type=content_type,
            size=upload.size,
            chunks=upload.chunks(),
            request_id=f"req_{uuid.uuid4().hex}",
        )
    except DomainError as error:
        form.add_error("file" if error.param == "file" else None, error.message)
        return _page(request, form, status=error.status if error.status < 500 else 400)
    messages.success(request, "Your audio is queued.")
    return redirect("domain_transcriptions", domain_id=request.domain.pk)


@domain_page()
@require_GET
def transcription_result(request: HttpRequest, job_id, fmt: str) -> HttpResponse:
    _require_audio(request)
    job = services.job_get(domain_id=request.domain.pk, owner_id=request.user.pk, job_id=job_id)
    try:
        return result_response(job, fmt)
    except DomainError as error:
        return HttpResponse(error.message, status=error.status, content_type="text/plain")


@domain_page()
@require_POST
def transcription_cancel(request: HttpRequest, job_id) -> HttpResponse:
    _require_audio(request)
    try:
        job = services.job_cancel(
            domain_id=request.domain.pk, owner_id=request.user.pk, job_id=job_id
        )
    except Conflict as error:
        messages.error(request, error.message)
    else:
        from inference.jobs import progress

        async_to_sync(progress.publish)(job)
        messages.success(request, "The job is cancelled.")
    return redirect("domain_transcriptions", domain_id=request.domain.pk)
