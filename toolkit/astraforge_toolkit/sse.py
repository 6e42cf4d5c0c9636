"""Server-sent events as the API sends them: ``id:`` (the record's offset), ``event:`` (its type),
``data:`` (the record as JSON), a blank line ending each event; ``:`` lines are pings.

The decoder only parses. Reconnecting with ``Last-Event-ID`` lives in the clients, which resume
after the last ``id`` they handed out, so every record arrives once, in order, across drops.
"""

import json

from astraforge_toolkit.types import Event


class SseDecoder:
    """Feed it lines (without their line ending); it returns an ``Event`` when one is complete.
    The record's offset is read from its data (the ``id:`` line carries the same number)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> Event | None:
        data, self._data = self._data, []
        if not data:
            return None
        return Event.from_json(json.loads("\n".join(data)))
