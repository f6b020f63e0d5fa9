"""uvicorn's HTTP protocol with a header-read timeout.

uvicorn bounds only the idle time between requests on a kept-alive connection
(`--timeout-keep-alive`): a client that connects and sends nothing, or a few bytes of a
request line and then nothing, held its connection for ever. This protocol closes a
connection whose request headers are not complete `CUBEAI_HEADER_READ_TIMEOUT` seconds after
it opened, or after the first byte of the next request on it. The body has its own timeouts
(`inference.limits.BodyLimit`, which answers 408). Run uvicorn with
`--http cubeai.server:HttpToolsProtocol` (`make run` does).
"""

import asyncio

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as BaseProtocol


class HttpToolsProtocol(BaseProtocol):
    """httptools' protocol, closing connections whose headers come too slowly."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                settings.CUBEAI_HEADER_READ_TIMEOUT, self._headers_too_slow
            )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
