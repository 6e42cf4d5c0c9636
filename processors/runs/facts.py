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
        self.consumer.assign([TopicPartition(settings.events_topic, partition, start)])

    def find(self, match: Callable[[Envelope], bool]) -> Envelope | None:
        return next((e for e in self.seen if match(e)), None)

    def wait(self, match: Callable[[Envelope], bool], timeout: float) -> Envelope:
        """The first record of the stream (read so far or still to come) that ``match``es."""
        found = self.find(match)
        deadline = time.monotonic() + timeout
        while found is None:
            if self.stopped():
                raise RunCancelled("the run was stopped")
            if time.monotonic() > deadline:
                raise FactTimeout(f"no answer within {timeout:.0f}s")
            for msg in poll_batch(self.consumer, 500, timeout=0.2):
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise AstraForgeError(f"reading the events topic: {msg.error()}")
                    continue
                if msg.key() != self.stream_id.encode():
                    continue
                try:
                    e = self.codec.decode(msg.value())
                except DecodeError:
                    continue
                self.seen.append(e)
                if found is None and match(e):
                    found = e
        return found

    def close(self) -> None:
        self.consumer.close()
