"""The transcription page's WebSocket: `ws/domains/<domain-id>/transcriptions/`.

It authenticates with the Django session and checks membership and an audio permission on
connect (outsiders and members without one are refused) and again at least every few seconds
while it runs, so a revoked membership ends the socket. It sends `{"type": "jobs", "jobs":
[...]}` (the member's recent jobs) at once, then `{"type": "job", "job": {...}}` whenever one
changes: from the worker's group messages on the Redis channel layer, or, on the embedded
default where the in-process layer cannot cross from the worker, by following the jobs' rows
(`CUBEAI_TRANSCRIPTION_PROGRESS`). The socket only sends; any message from the browser gets
an error frame and the socket stays open.
"""

import asyncio
import time

import orjson
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db.models import Q

from cubeai.exceptions import NotFound, PermissionDenied
from domains import permissions
from domains.selectors import domain_for_user
from inference.jobs import services
from inference.jobs.models import TranscriptionJob as Job

AUDIO_PERMISSIONS = (permissions.AUDIO_TRANSCRIPTIONS, permissions.AUDIO_TRANSLATIONS)
RECHECK_SECONDS = 5.0
RECENT = 50


def _db(function):
    return sync_to_async(function, thread_sensitive=True)


def member_may_follow(user, domain_id) -> None:
    """Raise NotFound (not a member) or PermissionDenied (no audio permission)."""
    _, granted = domain_for_user(user=user, domain_id=domain_id)
    if not any(p in granted for p in AUDIO_PERMISSIONS):
        raise PermissionDenied("This needs an audio permission.")


class TranscriptionJobsConsumer(AsyncWebsocketConsumer):
    follower: asyncio.Task | None = None
    group: str | None = None

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.domain_id = str(self.scope["url_route"]["kwargs"]["domain_id"])
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            await _db(member_may_follow)(self.user, self.domain_id)
        except NotFound:
            await self.close(code=4404)
            return
        except PermissionDenied:
            await self.close(code=4403)
            return
        self.checked_at = time.monotonic()
        await self.accept()
        layer = settings.CUBEAI_TRANSCRIPTION_PROGRESS == "layer"
        if layer:
            # Join the group before reading the jobs: an update sent in between then reaches
            # this socket (after the list, which it may repeat), rather than being lost.
            self.group = services.group_name(self.domain_id, self.user.pk)
            await self.channel_layer.group_add(self.group, self.channel_name)
        jobs = await _db(self._recent)()
        await self._send({"type": "jobs", "jobs": [services.job_object(job) for job in jobs]})
        if layer:
            self.follower = asyncio.create_task(self._recheck())
        else:
            active = {job.pk: _state(job) for job in jobs if job.status in Job.ACTIVE}
            self.follower = asyncio.create_task(self._follow(active))

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.follower is not None:
            self.follower.cancel()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        await self._send(
            {
                "type": "error",
                "error": {
                    "code": "read_only",
                    "message": "This socket only sends job progress; use the page's forms.",
                },
            }
        )

    async def job_update(self, event: dict) -> None:
        """A worker's group message (Redis channel layer)."""
        if await self._still_allowed():
            await self._send({"type": "job", "job": event["job"]})

    async def _send(self, message: dict) -> None:
        await self.send(text_data=orjson.dumps(message).decode())

    def _recent(self) -> list[Job]:
        jobs = Job.objects.filter(domain_id=self.domain_id, owner_id=self.user.pk)
        return list(jobs.order_by("-created_at", "-id")[:RECENT])

    def _watched(self, ids: list) -> list[Job]:
        rows = Job.objects.filter(domain_id=self.domain_id, owner_id=self.user.pk)
        return list(rows.filter(Q(status__in=Job.ACTIVE) | Q(pk__in=ids)))

    async def _follow(self, watched: dict) -> None:
        """Follow the member's active jobs' rows; send each change (embedded default)."""
        while True:
            await asyncio.sleep(settings.CUBEAI_TRANSCRIPTION_POLL_SECONDS)
            if not await self._still_allowed():
                return
            for job in await _db(self._watched)(list(watched)):
                if watched.get(job.pk) != _state(job):
                    await self._send({"type": "job", "job": services.job_object(job)})
                watched[job.pk] = _state(job)
            watched = {pk: state for pk, state in watched.items() if state[0] in Job.ACTIVE}

    async def _recheck(self) -> None:
        """Membership and permission every RECHECK_SECONDS on the channel layer, where no
        message may come for a long time (the rows' follower checks as it polls)."""
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            if not await self._still_allowed(now=True):
                return

    async def _still_allowed(self, *, now: bool = False) -> bool:
        """Membership and permission, again every few seconds (or `now`); closes the socket
        if lost."""
        if not now and time.monotonic() - self.checked_at < RECHECK_SECONDS:
            return True
        try:
            await _db(member_may_follow)(self.user, self.domain_id)
        except (NotFound, PermissionDenied):
            await self.close(code=4403)
            return False
        self.checked_at = time.monotonic()
        return True


def _state(job: Job) -> tuple:
    return (job.status, job.progress, job.attempts)
