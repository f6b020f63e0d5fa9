"""The transcription page's WebSocket consumer, through the project's ASGI application (the
session cookie, the origin check, the URL router), with `WebsocketCommunicator`.

Both ways progress reaches it are tested: following the jobs' rows (the embedded default,
where the in-process layer cannot cross from the worker) and group messages on the channel
layer (Redis in production; here the configured layer, in-memory or Redis, which carries
messages sent in this process either way).
"""

import asyncio

import orjson
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from cubeai.asgi import application
from domains.models import Membership
from inference.jobs import consumers, progress, storage
from inference.jobs.models import TranscriptionJob

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@sync_to_async
def make_job(domain, owner, **fields) -> TranscriptionJob:
    return TranscriptionJob.objects.create(
        domain=domain, owner=owner, model="whisper-tiny.en", filename="a.wav", **fields
    )


@sync_to_async
def set_job(job, **fields) -> None:
    TranscriptionJob.objects.filter(pk=job.pk).update(**fields)


async def connect(user, domain):
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if user is not None:
        cookie = await session_cookie(user)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = WebsocketCommunicator(
        application, f"/ws/domains/{domain.pk}/transcriptions/", headers=headers
    )
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def receive(communicator, timeout=3) -> dict:
    return orjson.loads(await communicator.receive_from(timeout=timeout))


@pytest.fixture
def poll(settings):
    settings.CUBEAI_TRANSCRIPTION_PROGRESS = "poll"
    settings.CUBEAI_TRANSCRIPTION_POLL_SECONDS = 0.05


@pytest.fixture
def layer(settings):
    settings.CUBEAI_TRANSCRIPTION_PROGRESS = "layer"


async def test_outsiders_strangers_and_members_without_an_audio_right_are_refused(
    alice, bob, charlie, domain, other_domain
):
    for user in (None, charlie, bob):  # no session, not a member, a viewer
        communicator, connected, _ = await connect(user, domain)
        assert connected is False, user
        await communicator.disconnect()


async def test_following_the_rows_sends_each_change_of_the_members_jobs(alice, bob, domain, poll):
    job = await make_job(domain, alice)
    others = await make_job(domain, bob)
    communicator, connected, _ = await connect(alice, domain)
    assert connected
    first = await receive(communicator)
    assert first["type"] == "jobs"
    assert [j["id"] for j in first["jobs"]] == [str(job.pk)]
    assert first["jobs"][0]["status"] == "queued"

    await set_job(job, status="running", progress=0.25)
    update = await receive(communicator)
    assert (update["type"], update["job"]["status"], update["job"]["progress"]) == (
        "job",
        "running",
        0.25,
    )
    # Another member's job in the same domain never reaches this socket.
    await set_job(others, status="running", progress=0.5)

    # A message from the browser that is not JSON gets an error frame; the socket goes on.
    await communicator.send_to(text_data="not json {")
    error = await receive(communicator)
    assert error["type"] == "error"
    assert error["error"]["code"] == "read_only"

    await set_job(job, progress=0.75)
    assert (await receive(communicator))["job"]["progress"] == 0.75
    await set_job(job, status="succeeded", progress=1.0, result={"text": "hi", "segments": []})
    done = await receive(communicator)
    assert (done["job"]["status"], done["job"]["progress"]) == ("succeeded", 1.0)
    assert "result" not in done["job"]  # the transcript is downloaded, never broadcast
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_group_messages_from_the_worker_reach_the_members_socket_only(
    alice, bob, domain, layer
):
    job = await make_job(domain, alice)
    bobs = await make_job(domain, bob)
    communicator, connected, _ = await connect(alice, domain)
    assert connected
    assert (await receive(communicator))["type"] == "jobs"

    await set_job(job, status="running", progress=0.4)
    job = await sync_to_async(TranscriptionJob.objects.get)(pk=job.pk)
    await progress.publish(job)
    update = await receive(communicator)
    assert (update["job"]["id"], update["job"]["progress"]) == (str(job.pk), 0.4)
    await progress.publish(bobs)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_an_update_sent_while_the_socket_reads_its_jobs_is_not_lost(
    alice, domain, layer, monkeypatch
):
    """The worker publishes between the consumer's read of the jobs and the list it sends:
    the socket is in the group already, so the update follows the list."""
    job = await make_job(domain, alice)
    read = consumers.TranscriptionJobsConsumer._recent

    def read_then_the_worker_publishes(consumer):
        jobs = read(consumer)
        TranscriptionJob.objects.filter(pk=job.pk).update(status="running", progress=0.3)
        async_to_sync(progress.publish)(TranscriptionJob.objects.get(pk=job.pk))
        return jobs

    monkeypatch.setattr(
        consumers.TranscriptionJobsConsumer, "_recent", read_then_the_worker_publishes
    )
    communicator, connected, _ = await connect(alice, domain)
    assert connected
    listed = await receive(communicator)
    assert (listed["type"], listed["jobs"][0]["status"]) == ("jobs", "queued")
    update = await receive(communicator)
    assert (update["type"], update["job"]["status"], update["job"]["progress"]) == (
        "job",
        "running",
        0.3,
    )
    await communicator.disconnect()


@pytest.mark.parametrize("path", ["poll", "layer"])
async def test_a_revoked_membership_closes_the_socket(
    alice, bob, domain, path, request, monkeypatch
):
    """On both paths, with no job changing: the channel layer's socket re-checks on its own."""
    request.getfixturevalue(path)
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.05)
    from domains import permissions, services

    member_role = await sync_to_async(services.role_builtin)(name=permissions.MEMBER)
    await sync_to_async(Membership.objects.filter(user=bob, domain=domain).update)(role=member_role)
    communicator, connected, _ = await connect(bob, domain)
    assert connected
    assert (await receive(communicator))["type"] == "jobs"
    await sync_to_async(Membership.objects.filter(user=bob, domain=domain).delete)()
    closed = await communicator.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": 4403}
    await asyncio.sleep(0)


async def test_a_job_made_through_the_api_reaches_the_open_socket_while_queued(
    alice, domain, layer, pat, settings, monkeypatch, async_client
):
    """On the channel layer the API announces a new job at once, so an open page draws it
    while it waits in the queue, not only once a worker takes it."""
    from inference.jobs import services as job_services
    from inference.models import Backend, Deployment, Model

    settings.CUBEAI_ROUTING_REFRESH_SECONDS = 0
    monkeypatch.setattr(job_services, "send", lambda job_id, **kw: None)  # no worker here
    backend = await Backend.objects.acreate(
        name="jobs-api", base_url="http://127.0.0.1:9/v1", allow_not_confidential=True
    )
    model = await Model.objects.acreate(name="whisper-tiny.en", tasks=["transcription"])
    await Deployment.objects.acreate(model=model, backend=backend, upstream_model="w")
    token = await sync_to_async(pat)(alice)
    communicator, connected, _ = await connect(alice, domain)
    assert connected
    assert (await receive(communicator))["jobs"] == []

    audio = SimpleUploadedFile("from-the-api.wav", b"RIFF\0\0\0\0WAVEfmt " + b"\0" * 2048)
    response = await async_client.post(
        f"/proxy/{domain.pk}/v1/audio/transcriptions/jobs",
        {"file": audio, "model": "whisper-tiny.en"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.content
    update = await receive(communicator)
    assert update["type"] == "job"
    assert (update["job"]["id"], update["job"]["status"]) == (response.json()["id"], "queued")
    assert update["job"]["filename"] == "from-the-api.wav"
    await communicator.disconnect()
    await sync_to_async(storage.delete)(response.json()["id"])


async def test_following_the_rows_reads_them_once_per_interval_for_all_sockets(
    alice, domain, poll, monkeypatch
):
    """Ten open pages cost one query of the jobs per poll interval, not ten."""
    from django.db.backends import utils

    job = await make_job(domain, alice, status="running", progress=0.1)
    queries = []
    execute = utils.CursorWrapper._execute

    def counting(self, sql, *args):
        if "transcriptionjob" in sql and sql.lstrip().upper().startswith("SELECT"):
            queries.append(sql)
        return execute(self, sql, *args)

    sockets = []
    for _ in range(10):
        communicator, connected, _ = await connect(alice, domain)
        assert connected
        assert (await receive(communicator))["type"] == "jobs"
        sockets.append(communicator)
    monkeypatch.setattr(utils.CursorWrapper, "_execute", counting)
    await asyncio.sleep(1.0)
    polls = 1.0 / settings.CUBEAI_TRANSCRIPTION_POLL_SECONDS
    assert len(queries) <= polls + 3, len(queries)
    await set_job(job, progress=0.6)
    for communicator in sockets:
        assert (await receive(communicator))["job"]["progress"] == 0.6
    await asyncio.gather(*(communicator.disconnect() for communicator in sockets))
