"""How the API is served: uvicorn, with a deadline on every request head.

uvicorn times out only an idle kept-alive connection; a connection that sends nothing, or a head
that never ends (slowloris), is held for ever, each one a file descriptor of the API process:
enough of them and nobody else is served. ``HeadTimeoutProtocol`` closes a connection whose
request head is not complete within ``header_timeout_s`` of the connection (or of the previous
response). Not protected here: a slow body or a slow reader of a response (an SSE client is one by
design); a reverse proxy in front is the place for per-client connection limits.
"""

import asyncio

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline (``head_timeout_s``)."""

    head_timeout_s = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next head on this connection gets the same deadline

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(app: FastAPI, host: str, port: int, header_timeout_s: float, **kwargs) -> uvicorn.Config:
    """The uvicorn configuration the API runs with (``astraforge api``, ``astraforge run``, tests)."""
    protocol = type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_s": header_timeout_s})
    return uvicorn.Config(app, host=host, port=port, http=protocol, **kwargs)
