"""The records of one run's stream, read from the events topic as they arrive: how a driver learns
what the sandbox processor did with the commands it appended.

Reading starts at the run's first record, so a driver that resumes after a crash finds the answers
to commands an earlier driver already sent (and does not send them again).
"""

import time
from collections.abc import Callable

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


class StreamFacts:
    """One run's records, in order, from ``start`` on; ``wait`` returns the first that matches."""

    def __init__(self, settings: Settings, stream_id: str, start: int, stopped: Callable[[], bool]) -> None:
        self.stream_id = stream_id
        self.stopped = stopped
        self.codec = default_codec()
        self.seen: list[Envelope] = []
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
        return next((e for e in self.seen if match(e)), None)

    def wait(self, match: Callable[[Envelope], bool], timeout: float) -> Envelope:
        """The first record of the stream (read so far or still to come) that ``match``es."""
        return self.next(0, match, timeout)[1]

    def next(self, start: int, match: Callable[[Envelope], bool], timeout: float) -> tuple[int, Envelope]:
        """The first record at or after position ``start`` of ``seen`` (read so far or still to come)
        that ``match``es, and its position: a caller that follows the stream record by record (an
        agent's output) asks for ``position + 1`` next, and may call ``wait`` in between."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.seen)):
                if match(self.seen[i]):
                    return i, self.seen[i]
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
                self.seen.append(self.codec.decode(msg.value()))
            except DecodeError:
                continue

    def close(self) -> None:
        self.consumer.close()
