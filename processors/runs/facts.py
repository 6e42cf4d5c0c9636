"""The records of one run's stream, read from the events topic as they arrive: how a driver learns
what the sandbox processor did with the commands it appended.

Reading starts at the run's first record, so a driver that resumes after a crash finds the answers
to commands an earlier driver already sent (and does not send them again).
"""

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from confluent_kafka import KafkaError, TopicPartition

from astraforge.config import Settings
from astraforge.errors import AstraForgeError, DecodeError
from astraforge.kafka import partition_for, poll_batch, reader
from astraforge.schemas import Envelope, default_codec


class RunCancelled(AstraForgeError, RuntimeError):
    """The run ended (cancelled, or its attempt superseded) while a driver waited."""


class StepFailed(AstraForgeError, RuntimeError):
    """The attempt cannot go on; the message is the run's ``reason``."""


class FactTimeout(AstraForgeError, TimeoutError):
    """An answer did not come in time."""


# payload fields that name what a record answers (a command, a file request, a snapshot, a diff)
ANSWER_KEYS = ("command_id", "request_id", "snapshot_id", "diff_id")


@dataclass(frozen=True)
class Answer:
    """A record of one of ``types`` whose ``key`` is ``ident`` (``key`` is one of ``ANSWER_KEYS``,
    ``sandbox_id`` for the envelope's sandbox, or ``artifact_id`` for a stored artifact): what a
    driver looks for, found through ``StreamFacts``' index rather than a scan of every record read."""

    types: tuple[str, ...]
    key: str
    ident: str

    def __call__(self, e: Envelope) -> bool:
        return e.type in self.types and ident_of(e, self.key) == self.ident


def ident_of(e: Envelope, key: str) -> str | None:
    if key == "sandbox_id":
        return e.sandbox_id
    if key == "artifact_id":
        artifact = e.payload.get("artifact")
        return artifact.get("artifact_id") if isinstance(artifact, dict) else None
    value = e.payload.get(key)
    return value if isinstance(value, str) else None


def index_keys(e: Envelope) -> Iterator[tuple[str, str, str]]:
    """The (type, key, ident) entries a record is indexed under."""
    for key in (*ANSWER_KEYS, "sandbox_id", "artifact_id"):
        ident = ident_of(e, key)
        if ident is not None:
            yield e.type, key, ident


class StreamFacts:
    """One run's records, in order, from ``start`` on; ``wait`` returns the first that matches.

    Lookups by ``Answer`` go through an index of the records read (positions per type, key and id),
    so a run of n steps costs O(n) in lookups, not O(n^2) (each step used to rescan everything read);
    ``examined`` counts the records lookups looked at (an operation count a test can bound)."""

    def __init__(self, settings: Settings, stream_id: str, start: int, stopped: Callable[[], bool]) -> None:
        self.stream_id = stream_id
        self.stopped = stopped
        self.codec = default_codec()
        self.seen: list[Envelope] = []
        self.index: dict[tuple[str, str, str], list[int]] = {}  # positions in ``seen``, ascending
        self.examined = 0
        self.consumer = reader(settings, **{"enable.partition.eof": False})
        partition = partition_for(stream_id, settings.topic_partitions)
        self.partition = TopicPartition(settings.events_topic, partition, start)
        self.consumer.assign([self.partition])
        self.position = start  # the next offset to read
        self.caught_up = False

    def find(self, match: Callable[[Envelope], bool]) -> Envelope | None:
        """The first record already in the stream that ``match``es: everything the stream held at
        the first lookup is read before answering (a resumed driver must not miss an answer that is
        there but not yet fetched, and send its command again)."""
        if not self.caught_up:
            self.catch_up()
        found = self._first(0, match)
        return None if found is None else found[1]

    def add(self, e: Envelope) -> None:
        """A record of the stream, in order (read, or just written by the driver itself)."""
        position = len(self.seen)
        self.seen.append(e)
        for entry in index_keys(e):
            self.index.setdefault(entry, []).append(position)

    def all(self, answer: Answer) -> list[Envelope]:
        """Every record read so far that ``answer`` matches, in stream order (through the index)."""
        positions = sorted(p for t in answer.types for p in self.index.get((t, answer.key, answer.ident), ()))
        self.examined += len(positions)
        return [self.seen[p] for p in positions]

    def _first(self, start: int, match: Callable[[Envelope], bool]) -> tuple[int, Envelope] | None:
        """The first record at or after ``start`` that ``match``es among those read: an ``Answer`` is
        looked up in the index, anything else by a scan."""
        if isinstance(match, Answer):
            best = None
            for type_ in match.types:
                positions = self.index.get((type_, match.key, match.ident), ())
                i = bisect.bisect_left(positions, start)
                if i < len(positions):
                    self.examined += 1
                    best = positions[i] if best is None else min(best, positions[i])
            return None if best is None else (best, self.seen[best])
        for i in range(start, len(self.seen)):
            self.examined += 1
            if match(self.seen[i]):
                return i, self.seen[i]
        return None

    def wait(self, match: Callable[[Envelope], bool], timeout: float) -> Envelope:
        """The first record of the stream (read so far or still to come) that ``match``es."""
        return self.next(0, match, timeout)[1]

    def next(self, start: int, match: Callable[[Envelope], bool], timeout: float) -> tuple[int, Envelope]:
        """The first record at or after position ``start`` of ``seen`` (read so far or still to come)
        that ``match``es, and its position: a caller that follows the stream record by record (an
        agent's output) asks for ``position + 1`` next, and may call ``wait`` in between."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._first(start, match)
            if found is not None:
                return found
            if not isinstance(match, Answer):  # a scan need not look at these again; an index lookup is cheap
                start = len(self.seen)
            if self.stopped():
                raise RunCancelled("the run was stopped")
            if time.monotonic() > deadline:
                raise FactTimeout(f"no answer within {timeout:.0f}s")
            self._poll(0.2)

    def catch_up(self, timeout: float = 60.0) -> None:
        """Read every record the stream holds now (a resumed driver sees all an earlier one wrote)."""
        _, high = self.consumer.get_watermark_offsets(self.partition, timeout=timeout, cached=False)
        deadline = time.monotonic() + timeout
        while self.position < high:
            if time.monotonic() > deadline:
                raise FactTimeout(f"could not read the run's records within {timeout:.0f}s")
            self._poll(0.2)
        self.caught_up = True

    def _poll(self, timeout: float) -> None:
        for msg in poll_batch(self.consumer, 500, timeout=timeout):
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise AstraForgeError(f"reading the events topic: {msg.error()}")
                continue
            self.position = msg.offset() + 1
            if msg.key() != self.stream_id.encode():
                continue
            try:
                e = self.codec.decode(msg.value())
            except DecodeError:
                continue
            self.add(e)

    def close(self) -> None:
        self.consumer.close()
