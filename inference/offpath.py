"""Executors of their own for the database work the API does beside requests.

Routing-snapshot rebuilds, metering flushes and a request's cache misses (authentication,
limits, model lists) each run on a small thread pool of their own, with their own database
connections, instead of Django's one shared sync thread: a request never queues behind a
flush or a rebuild, and a slow write holds up only its own kind of work. The API's handler
opens no connection on the event loop's thread and sends Django's request signals there
(`cubeai.asgi.APIHandler`): these executors look after their connections themselves.

`CUBEAI_OFFPATH_EXECUTORS` (on by default) can turn them off: the work then runs on the
shared sync thread. The in-process tests do that, because they read and write through one
uncommitted transaction that only that thread's connection sees; every server process the
tests start runs with the executors on, as production does.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

# name -> threads: cache misses may come several at once, the others are one at a time.
SIZES = {"auth": 4, "metering": 1, "registry": 1}
_executors: dict[str, ThreadPoolExecutor] = {}


def executor(name: str) -> ThreadPoolExecutor:
    pool = _executors.get(name)
    if pool is None:
        pool = _executors[name] = ThreadPoolExecutor(SIZES[name], thread_name_prefix=f"cube-{name}")
    return pool


def _call(fn, args, kwargs):
    try:
        return fn(*args, **kwargs)
    finally:
        # Keep the connection for the next job, unless it broke (a database restart): then
        # the next job opens a new one.
        for connection in connections.all(initialized_only=True):
            if connection.errors_occurred and not connection.is_usable():
                connection.close()
            connection.errors_occurred = False


async def run(name: str, fn, *args, **kwargs):
    """`fn(*args, **kwargs)` (synchronous, may use the ORM) on the `name` executor."""
    if not settings.CUBEAI_OFFPATH_EXECUTORS:
        return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(name), _call, fn, args, kwargs)
