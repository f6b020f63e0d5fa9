"""Progress from the worker to the browser: a group message per change on the Channels layer
when it crosses processes (Redis); on the embedded default the page's consumer follows the
job's row instead (`CUBEAI_TRANSCRIPTION_PROGRESS`, see consumers.py)."""

import logging

from channels.layers import get_channel_layer
from django.conf import settings

from inference.jobs import services
from inference.jobs.models import TranscriptionJob

log = logging.getLogger(__name__)


async def publish(job: TranscriptionJob) -> None:
    if settings.CUBEAI_TRANSCRIPTION_PROGRESS != "layer":
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(
            services.group_name(job.domain_id, job.owner_id),
            {"type": "job.update", "job": services.job_object(job)},
        )
    except Exception:
        # Progress is advisory: the row is the truth, and the page reads it on connect.
        log.warning("could not publish the progress of transcription job %s", job.pk)
