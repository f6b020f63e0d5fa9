"""The transcription page's WebSocket: `ws/domains/<domain-id>/transcriptions/`.

It authenticates with the Django session and checks membership and an audio permission on
connect (outsiders and members without one are refused) and again at least every few seconds
while it runs, so a revoked membership ends the socket. It sends `{"type": "jobs", "jobs":
[...]}` (the member's recent jobs) at once, then `{"type": "job", "job": {...}}` whenever one
changes: from the worker's group messages on the Redis channel layer, or, on the embedded
default where the in-process layer cannot cross from the worker, by following the jobs' rows
(`CUBEAI_TRANSCRIPTION_PROGRESS`): one follower per process reads the rows of every open
socket's jobs with one query each `CUBEAI_TRANSCRIPTION_POLL_SECONDS`, not one per socket.
The socket only sends; any message from the browser gets an error frame and the socket stays
open.
"""

import asyncio
import logging
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

log = logging.getLogger(__name__)

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


def _rows(members: set[tuple[str, int]], ids: set) -> list[Job]:
    """The jobs the open sockets follow: their members' active jobs, and those they watched
    (to see them end), in one query."""
    rows = Job.objects.filter(
        domain_id__in={domain_id for domain_id, _ in members},
        owner_id__in={owner_id for _, owner_id in members},
    ).filter(Q(status__in=Job.ACTIVE) | Q(pk__in=ids))
    return [job for job in rows if (str(job.domain_id), job.owner_id) in members]


class RowFollower:
    """The rows' follower of one process (and event loop): every
    `CUBEAI_TRANSCRIPTION_POLL_SECONDS`, one query for the jobs of every open socket, each
    socket handed its own; it runs while any socket follows."""

    def __init__(self) -> None:
        self.sockets: dict[TranscriptionJobsConsumer, dict] = {}
        self.task: asyncio.Task | None = None

    def add(self, consumer: "TranscriptionJobsConsumer", watched: dict) -> None:
        self.sockets[consumer] = watched
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())

    def remove(self, consumer: "TranscriptionJobsConsumer") -> None:
        self.sockets.pop(consumer, None)

    async def _run(self) -> None:
        while self.sockets:
            await asyncio.sleep(settings.CUBEAI_TRANSCRIPTION_POLL_SECONDS)
            sockets = dict(self.sockets)
            if not sockets:
                return
            members = {(c.domain_id, c.user.pk) for c in sockets}
            ids = {pk for watched in sockets.values() for pk in watched}
            try:
                rows = await _db(_rows)(members, ids)
            except Exception:
                log.exception("could not read the transcription jobs' rows")
                continue
            await asyncio.gather(
                *(consumer.rows_changed(rows) for consumer in sockets if consumer in self.sockets)
            )


_followers: dict[asyncio.AbstractEventLoop, RowFollower] = {}


def follower() -> RowFollower:
    """This event loop's follower (a process runs one loop; each test its own)."""
    loop = asyncio.get_running_loop()
    for other in [other for other in _followers if other.is_closed()]:
        del _followers[other]
    return _followers.setdefault(loop, RowFollower())


class TranscriptionJobsConsumer(AsyncWebsocketConsumer):
    follower: asyncio.Task | None = None
    group: str | None = None
    watched: dict | None = None

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
            self.watched = {job.pk: _state(job) for job in jobs if job.status in Job.ACTIVE}
            follower().add(self, self.watched)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.follower is not None:
            self.follower.cancel()
        if self.watched is not None:
            follower().remove(self)

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

    async def rows_changed(self, rows: list[Job]) -> None:
        """The follower's latest rows: send each change of this member's jobs (embedded
        default), after the membership re-check."""
        if self.watched is None or not await self._still_allowed():
            return
        watched = self.watched
        for job in rows:
            if (str(job.domain_id), job.owner_id) != (self.domain_id, self.user.pk):
                continue
            if job.status not in Job.ACTIVE and job.pk not in watched:
                continue
            if watched.get(job.pk) != _state(job):
                await self._send({"type": "job", "job": services.job_object(job)})
            watched[job.pk] = _state(job)
        for pk in [pk for pk, state in watched.items() if state[0] not in Job.ACTIVE]:
            del watched[pk]

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
            if self.watched is not None:
                follower().remove(self)
                self.watched = None
            await self.close(code=4403)
            return False
        self.checked_at = time.monotonic()
        return True


def _state(job: Job) -> tuple:
    return (job.status, job.progress, job.attempts)
