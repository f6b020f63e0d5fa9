"""ASGI entry point: Django HTTP and Channels WebSockets, served by uvicorn.

The OpenAI-compatible API (`/proxy/...`) is served by its own Django handler without the
page middleware (sessions, CSRF, messages, static files...): none of it applies to a Bearer
API, and each sync middleware costs a thread hop per request. Its security headers are set
here instead. Everything else goes through Django's usual handler. Both build requests with
the length of the body they received (`cubeai.bodies`), so chunked uploads work everywhere.
"""

import asyncio
import contextlib
import gc
import os
import sys

import django

from cubeai.bodies import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cubeai.settings")

# Django must be set up before anything imports models or consumers.
django.setup(set_prefix=False)
django_application = ASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from cubeai.routing import websocket_urlpatterns  # noqa: E402
from inference.accesslog import RequestRecord  # noqa: E402
from inference.cors import CORS  # noqa: E402
from inference.limits import BodyLimit  # noqa: E402

API_PREFIX = "/proxy/"
API_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class APIHandler(ASGIHandler):
    """Django's ASGI handler with no middleware and no per-request thread context.

    Without `ThreadSensitiveContext`, the few synchronous calls of the API (cache misses of
    auth and routing, metering flushes) share Django's one sync thread and its database
    connection instead of starting a thread for every request.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response_async)

    async def handle(self, scope, receive, send):
        """Django's `handle`, sending its request signals on this thread.

        Django sends `request_started`, and closes the response (which sends
        `request_finished`), through `sync_to_async`: two hand-offs to its sync thread and
        back a request, each a thread wake-up on or beside the request's path. Their receivers
        (reset_queries, close_old_connections, close_caches, reset_urlconf) act on the calling
        thread's connections and caches, and the API opens no database connection on the
        event loop's thread: its database work runs on executors that look after their own
        connections (`inference/offpath.py`). So here they run inline, cheaply.
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request():
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client left while sent
                await self.send_response(response, send)
            return response

        # As Django does: a disconnect while the response is being made cancels it (a stream's
        # upstream request with it).
        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        processor = asyncio.create_task(process_request())
        await asyncio.wait([listener, processor], return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, processor):
            if not task.done():
                task.cancel()
            with contextlib.suppress(RequestAborted, asyncio.CancelledError):
                await task
        if processor.cancelled():
            signals.request_finished.send(sender=self.__class__)
        else:
            processor.result().close()
        body_file.close()

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name for name, _ in message["headers"]}
                message["headers"] = [
                    *message["headers"],
                    *((n, v) for n, v in API_HEADERS if n not in names),
                ]
            await send(message)

        await self.handle(scope, receive, send_with_headers)


api_application = CORS(APIHandler())


async def http_application(scope, receive, send):
    handler = api_application if scope["path"].startswith(API_PREFIX) else django_application
    await handler(scope, receive, send)


# How often the interpreter lock passes between threads (Python's default: 5 ms). A request
# woken while an off-path thread computes (a metering flush, a routing rebuild) waits up to
# this long at each step; 0.5 ms keeps the waits short, for a few more hand-offs.
SWITCH_INTERVAL_SECONDS = 0.0005


def tune_process() -> None:
    """Once the web process has loaded its code: keep everything loaded so far out of the
    garbage collector's full passes (`gc.freeze`: a full pass over Django's and the
    models' long-lived objects took 100-200 ms, stalling every request in flight), and
    pass the interpreter lock more often."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 -- the URLconf, and the views it imports
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


async def lifespan(scope, receive, send):
    """Start-up and shutdown of the process. At start-up, `tune_process`, and the process's
    metering writer (`inference.metering_writer`) where `CUBEAI_METERING_WRITER` is on. At
    shutdown, usage and audit events still buffered are handed over, and the writer is
    waited for while it writes them (a restart loses no metering)."""
    from django.conf import settings

    from inference import metering, metering_writer

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            tune_process()
            # The in-process tests turn the off-path executors off (inference/offpath.py):
            # their events must be written in the test's own transaction.
            if settings.CUBEAI_METERING_WRITER and settings.CUBEAI_OFFPATH_EXECUTORS:
                metering_writer.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await metering.flush()
            await asyncio.to_thread(metering_writer.stop)
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "lifespan": lifespan,
        # Outside the body limits, so that their refusals under /proxy/ are recorded too.
        "http": RequestRecord(BodyLimit(http_application)),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
