"""A backend's stream is relayed as it is read (`upstream.line_batches`): the events that
arrived together go to the client in one write, events sent apart stay apart, and the
idle timeout still runs from the last complete line."""

import asyncio

import aiohttp
import pytest
from aiohttp import web

from inference import api, upstream


async def serve(handler):
    """A local server whose one route is `handler`; returns (runner, url)."""
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/"


async def read_batches(handler) -> list[list[bytes]]:
    runner, url = await serve(handler)
    try:
        async with aiohttp.ClientSession() as session, session.post(url) as response:
            return [batch async for batch in upstream.line_batches(response)]
    finally:
        await runner.cleanup()


async def start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def test_events_sent_together_come_in_one_batch_and_events_sent_apart_do_not():
    async def handler(request):
        response = await start(request)
        await response.write(b"data: 1\n\ndata: 2\n\ndata: 3\n\n")
        await asyncio.sleep(0.1)
        await response.write(b"data: 4\n\n")
        await asyncio.sleep(0.1)
        # A line cut in two by the network is whole in the batch where it ends.
        await response.write(b"data: fi")
        await asyncio.sleep(0.1)
        await response.write(b"ve\n\ndata: [DONE]\n\n")
        return response

    batches = await read_batches(handler)
    events = [[line for line in batch if line] for batch in batches]
    assert events == [
        [b"data: 1", b"data: 2", b"data: 3"],
        [b"data: 4"],
        [b"data: five", b"data: [DONE]"],
    ]


async def test_a_backend_that_trickles_bytes_without_ending_a_line_times_out(settings):
    settings.CUBEAI_UPSTREAM_IDLE_TIMEOUT = 0.5

    async def handler(request):
        response = await start(request)
        await response.write(b"data: 1\n\n")
        for _ in range(40):  # a byte every 0.1 s, never a newline: 4 s
            await asyncio.sleep(0.1)
            await response.write(b"x")
        return response

    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TimeoutError):
        await read_batches(handler)
    assert loop.time() - began < 3


async def test_a_line_longer_than_the_limit_is_a_payload_error(monkeypatch):
    monkeypatch.setattr(upstream, "MAX_LINE_BYTES", 1000)

    async def handler(request):
        response = await start(request)
        await response.write(b"data: " + b"x" * 5000)
        await asyncio.sleep(0.2)
        return response

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_batches(handler)


class Chunks:
    """A pipeline stream's stand-in: chunks, each with whether the next one came with it."""

    def __init__(self, chunks):
        self._chunks = chunks
        self.more_ready = False
        self.closed = False

    async def _iterate(self):
        for chunk, more in self._chunks:
            self.more_ready = more
            yield chunk

    def __aiter__(self):
        return self._iterate()

    async def aclose(self):
        self.closed = True


async def test_the_api_writes_the_chunks_of_one_read_in_one_piece():
    stream = Chunks([({"n": 1}, True), ({"n": 2}, False), ({"n": 3}, False)])
    written = [piece async for piece in api.sse(stream)]
    assert written == [
        b'data: {"n":1}\n\ndata: {"n":2}\n\n',
        b'data: {"n":3}\n\n',
        b"data: [DONE]\n\n",
    ]
    assert stream.closed
