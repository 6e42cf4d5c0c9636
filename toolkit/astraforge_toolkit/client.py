"""``AstraForgeClient``: the sync client (``aio.AsyncAstraForgeClient`` is the async one).

    client = AstraForgeClient("http://127.0.0.1:8000", api_key)
    sandbox = client.create_sandbox()
    print(client.exec(sandbox.id, "uname -a").output)

One ``httpx.Client`` is kept for the client's life (a new connection per call costs tens of ms).
The client is thread-safe as httpx's is. Errors are ``errors.AstraForgeError`` subclasses that
carry the API's error ``code``.
"""

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from astraforge_toolkit.calls import ApiCalls, Call
from astraforge_toolkit.errors import ApiUnavailable, AstraForgeError, error_from_response
from astraforge_toolkit.sse import SseDecoder
from astraforge_toolkit.types import Event

DEFAULT_TIMEOUT_S = 60.0
RETRIES = 3  # sends of a retryable call after a dropped connection (or 409 idempotency_in_progress)
NOT_FOUND_POLL_S = 0.05
STREAM_READ_TIMEOUT_S = 60.0  # the API pings an open stream every 15 s
STREAM_RECONNECTS = 5  # reconnects in a row that brought nothing before a stream gives up


def settings_from_env(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """``base_url`` and ``api_key``, or ``ASTRAFORGE_URL`` / ``ASTRAFORGE_API_KEY``."""
    url = base_url or os.environ.get("ASTRAFORGE_URL", "http://127.0.0.1:8000")
    key = api_key or os.environ.get("ASTRAFORGE_API_KEY")
    if not key:
        raise ValueError("an API key is needed: pass api_key or set ASTRAFORGE_API_KEY")
    return url.rstrip("/"), key


def check(response: httpx.Response) -> httpx.Response:
    """The response, or the ``AstraForgeError`` its error body names."""
    if response.is_success:
        return response
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    raise error_from_response(response.status_code, body, response.text)


def in_progress(error: AstraForgeError) -> bool:
    """The first request under this key is still running: retry shortly (never a duplicate)."""
    return error.status == 409 and error.code == "idempotency_in_progress"


class StreamTracker:
    """The highest offset seen per stream, so a new follow of the same stream (``exec_stream``)
    starts there instead of replaying everything: records appended after a call was sent come
    after every offset seen before it."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def start(self, stream_id: str) -> int:
        return self.seen.get(stream_id, -1)

    def saw(self, event: Event) -> None:
        if event.offset > self.seen.get(event.stream_id, -1):
            self.seen[event.stream_id] = event.offset


def ends_command(event: Event, command_id: str) -> bool:
    return event.type == "exec.finished" and event.payload.get("command_id") == command_id


def of_command(event: Event, command_id: str) -> bool:
    return event.payload.get("command_id") == command_id


REPLY_ENDS = ("reply.completed", "reply.failed", "reply.cancelled")


def ends_reply(event: Event, reply_id: str) -> bool:
    return event.type in REPLY_ENDS and event.payload.get("reply_id") == reply_id


class ReplyFilter:
    """Which records of a conversation's stream belong to one reply: from its ``reply.started`` on.
    A follow starts at the highest offset this client has seen, which for a new client (or one that
    never followed this conversation) is the stream's start: without this, the earlier replies'
    tokens and messages would be handed out as this reply's."""

    def __init__(self, reply_id: str) -> None:
        self.reply_id = reply_id
        self.started = False

    def __call__(self, event: Event) -> bool:
        if not self.started:
            self.started = event.type == "reply.started" and event.payload.get("reply_id") == self.reply_id
        return self.started


class AstraForgeClient(ApiCalls):
    """The AstraForge API over HTTP: sandboxes, exec, files, snapshots, runs, streams."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base_url, self.api_key = settings_from_env(base_url, api_key)
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=timeout
        )
        self._streams = StreamTracker()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AstraForgeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call) -> Any:
        headers = {"Idempotency-Key": call.idempotency_key} if call.idempotency_key else {}
        grace_until = time.monotonic() + call.not_found_grace_s
        attempt = 0
        while True:
            last = attempt == RETRIES or not call.retryable
            try:
                response = self._http.request(
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
                    time.sleep(NOT_FOUND_POLL_S)
                    continue
                if last or not in_progress(e):
                    raise
            time.sleep(0.2 * 2**attempt)
            attempt += 1

    # -- streams (SSE) ---------------------------------------------------------------------
    def stream(self, stream_id: str, *, after: int = -1) -> Iterator[Event]:
        """The stream's records with offset > ``after``, then live ones as they come, forever
        (break out when done). A dropped connection is resumed with ``Last-Event-ID``: every
        record once, in order, no gap."""
        last, idle = after, 0
        while True:
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/streams/{stream_id}/events/sse",
                    headers={"Last-Event-ID": str(last), "Accept": "text/event-stream"},
                    timeout=httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT_S),
                ) as response:
                    if not response.is_success:
                        response.read()
                        check(response)
                    decoder = SseDecoder()
                    for line in response.iter_lines():
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
            time.sleep(0.1 * idle)

    def exec_stream(
        self,
        sandbox_id: str,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """Run ``command`` and yield its records (``exec.started``, ``exec.output`` chunks...) as
        they happen, ending with its ``exec.finished``."""
        start = self._streams.start(sandbox_id)
        accepted = self.exec_async(sandbox_id, command, cwd=cwd, env=env, timeout=timeout)
        for event in self.stream(accepted.stream_id, after=start):
            if of_command(event, accepted.command_id):
                yield event
                if ends_command(event, accepted.command_id):
                    return

    def converse(self, conversation_id: str, text: str) -> Iterator[Event]:
        """Send ``text`` and yield the conversation's records as the reply happens (``chat.delta``
        tokens, ``chat.message``, ``tool.called`` / ``tool.result``, ``todo.updated``...),
        from its ``reply.started`` to its ``reply.completed``, ``reply.failed`` or ``reply.cancelled``
        (records of earlier replies, or of one still ahead of it in the queue, are not its)."""
        start = self._streams.start(conversation_id)
        accepted = self.send_message(conversation_id, text)
        mine = ReplyFilter(accepted.reply_id)
        for event in self.stream(conversation_id, after=start):
            if mine(event):
                yield event
                if ends_reply(event, accepted.reply_id):
                    return
