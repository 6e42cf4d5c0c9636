"""``AsyncAstraForgeClient``: the same calls as ``AstraForgeClient``, each awaited.

    async with AsyncAstraForgeClient(url, key) as client:
        sandbox = await client.create_sandbox()
        result = await client.exec(sandbox.id, "pytest -q")

Every method of ``calls.ApiCalls`` returns an awaitable here; ``stream`` and ``exec_stream`` are
async iterators. An instance belongs to the event loop it is first used on (httpx's pool does).
"""

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from astraforge_toolkit.calls import ApiCalls, Call
from astraforge_toolkit.client import (
    DEFAULT_TIMEOUT_S,
    NOT_FOUND_POLL_S,
    RETRIES,
    STREAM_READ_TIMEOUT_S,
    STREAM_RECONNECTS,
    ReplyFilter,
    StreamTracker,
    check,
    ends_command,
    ends_reply,
    in_progress,
    of_command,
    settings_from_env,
)
from astraforge_toolkit.errors import ApiUnavailable, AstraForgeError
from astraforge_toolkit.sse import SseDecoder
from astraforge_toolkit.types import Event


class AsyncAstraForgeClient(ApiCalls):
    """The AstraForge API over HTTP, for asyncio code."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base_url, self.api_key = settings_from_env(base_url, api_key)
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=timeout
        )
        self._streams = StreamTracker()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncAstraForgeClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> Any:
        headers = {"Idempotency-Key": call.idempotency_key} if call.idempotency_key else {}
        grace_until = time.monotonic() + call.not_found_grace_s
        attempt = 0
        while True:
            last = attempt == RETRIES or not call.retryable
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    content=call.content,
                    headers=headers,
                    timeout=call.timeout or self.timeout,
                )
                return call.read(check(response))
            except httpx.TransportError as e:
                if last:
                    raise ApiUnavailable(0, "unreachable", f"{call.method} {call.path}: {e!r}") from e
            except AstraForgeError as e:
                if e.status == 404 and time.monotonic() < grace_until:
                    await asyncio.sleep(NOT_FOUND_POLL_S)
                    continue
                if last or not in_progress(e):
                    raise
            await asyncio.sleep(0.2 * 2**attempt)
            attempt += 1

    async def stream(self, stream_id: str, *, after: int = -1) -> AsyncIterator[Event]:
        """As ``AstraForgeClient.stream``: replay then live, resumed by ``Last-Event-ID``."""
        last, idle = after, 0
        while True:
            try:
                async with self._http.stream(
                    "GET",
                    f"/v1/streams/{stream_id}/events/sse",
                    headers={"Last-Event-ID": str(last), "Accept": "text/event-stream"},
                    timeout=httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT_S),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        check(response)
                    decoder = SseDecoder()
                    async for line in response.aiter_lines():
                        event = decoder.feed(line)
                        if event is not None and event.offset > last:
                            last, idle = event.offset, 0
                            self._streams.saw(event)
                            yield event
            except httpx.TransportError:
                pass
            idle += 1
            if idle > STREAM_RECONNECTS:
                raise ApiUnavailable(0, "unreachable", f"stream {stream_id}: {STREAM_RECONNECTS} reconnects failed")
            await asyncio.sleep(0.1 * idle)

    async def exec_stream(
        self,
        sandbox_id: str,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Event]:
        """As ``AstraForgeClient.exec_stream``: the command's records until its ``exec.finished``."""
        start = self._streams.start(sandbox_id)
        accepted = await self.exec_async(sandbox_id, command, cwd=cwd, env=env, timeout=timeout)
        stream = self.stream(accepted.stream_id, after=start)
        try:
            async for event in stream:
                if of_command(event, accepted.command_id):
                    yield event
                    if ends_command(event, accepted.command_id):
                        return
        finally:
            await stream.aclose()

    async def converse(self, conversation_id: str, text: str) -> AsyncIterator[Event]:
        """As ``AstraForgeClient.converse``: the reply's records until it ends."""
        start = self._streams.start(conversation_id)
        accepted = await self.send_message(conversation_id, text)
        mine = ReplyFilter(accepted.reply_id)
        stream = self.stream(conversation_id, after=start)
        try:
            async for event in stream:
                if mine(event):
                    yield event
                    if ends_reply(event, accepted.reply_id):
                        return
        finally:
            await stream.aclose()
