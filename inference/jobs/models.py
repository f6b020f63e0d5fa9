"""The transcription job row: the one record of a job's state, written with conditional
updates so that a job run twice (a redelivered or re-queued task) stores its result once."""

import uuid

from django.conf import settings
from django.db import models

from domains.models import Domain


class TranscriptionJob(models.Model):
    """An audio file to transcribe (or translate into English) in the background.

    The audio itself is a file in the private data folder (`inference.jobs.storage`) until
    the job ends; the prompt (in `options`) is cleared then too. The result (text and
    segments) is deleted `CUBEAI_TRANSCRIPTION_RESULT_DAYS` after the job ended.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Task(models.TextChoices):
        TRANSCRIBE = "transcribe"
        TRANSLATE = "translate"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # The token that created it through the API (its rights apply when it runs); null for
    # jobs made on the page, which run with the owner's role.
    token_id = models.BigIntegerField(null=True, blank=True)
    model = models.CharField(max_length=128)
    task = models.CharField(max_length=16, choices=Task.choices, default=Task.TRANSCRIBE)
    language = models.CharField(max_length=16, blank=True)
    response_format = models.CharField(max_length=16, default="json")
    # prompt, temperature: cleared when the job ends.
    options = models.JSONField(default=dict, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=128, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0)
    # The audio's duration in seconds, once the backend has said.
    duration = models.FloatField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    # {"text", "language", "duration", "segments": [...]}: the whole transcript.
    result = models.JSONField(null=True, blank=True)
    backend = models.CharField(max_length=128, blank=True)
    tee_type = models.CharField(max_length=16, blank=True)
    attestation = models.CharField(max_length=32, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Until when the job's current holder (a waiting message or a running worker) is trusted;
    # past it the sweeper sends the job again.
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        app_label = "inference"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["domain", "owner", "created_at"])]

    def __str__(self) -> str:
        return f"{self.task} {self.id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED
