"""Where a processor has handled each source partition up to: its own committed offset.

Faust's committed offset does not say which commands were handled, so a processor does not trust
it. Faust commits a run of consecutive acknowledged offsets even when the record *at* its committed
offset was never acknowledged (``Consumer._new_offset`` tests ``min(acked) - committed > 1``), and
it counts every offset it did not see between two records it read as acknowledged (``_add_gap``).
A revocation drops the records faust had buffered for a stream but not yet handed out; when the
partition came back and reading resumed past them, faust committed past them: commands accepted by
the API and never handled (16 of 456 execs in one run of
tests/security/test_attack_processors.py, 23 of 560 in another).

So each partition has a ``CommandCursor`` position, kept in the processor's table (key
``@commands-<partition>``, recovered with the table when the partition is assigned): every record
below it was handled, durably (its records acknowledged by Kafka before the position moves past
it). The processor hands records to ``in_order`` (the ones faust delivers) and ``catch_up`` (at a
take-over): records below the position are skipped, the ones between the position and a delivered
record are read from Kafka and handled first. Faust's own commit only says where its reading
starts. A position that lags (its table write lost in a crash) makes a few commands handled again:
the processor's decisions drop what its durable facts already hold (a command id seen, a sandbox
that exists).
"""

import logging
from collections.abc import Callable

import faust
from confluent_kafka import Consumer, TopicPartition

from astraforge.kafka import ReaderPool, client_config, read_range
from astraforge.processors.runtime import Runtime, Source

LOG = logging.getLogger(__name__)
Handler = Callable[[Source, bytes], None]


class GapNotRead(OSError):
    """The records between the position and a delivered record could not all be read now (transient:
    the caller retries; the delivered record is not handled before them)."""


class CommandCursor:
    """Per owned partition of ``runtime``'s source topic: the offset of the next record to handle.

    Not thread-safe by itself: the caller holds the partition's lock and owns the partition (within
    its lease) around ``in_order``, ``catch_up`` and ``advance``."""

    def __init__(self, runtime: Runtime, table: faust.Table) -> None:
        self.runtime = runtime
        self.table = table
        self.topic = runtime.source_topic
        self._next: dict[int, int] = {}
        self._readers = ReaderPool(runtime.settings, keep=2)

    @staticmethod
    def key(partition: int) -> str:
        return f"@commands-{partition}"

    def load(self, partition: int, cursor_added: bool = False) -> int:
        """Take the partition's position from the table (a take-over: the table is recovered).

        ``cursor_added``: the processor trusted faust's committed offset in an earlier release (the
        conversation processor). A table of its that holds the partition's events mark (``@<partition>``)
        but no position was kept by that release: faust's commit was its position then, and starting
        at 0 would handle again every command the topic still holds (posting old messages and answering
        them twice). Not for the others: their first position write lost in a crash would start them
        at faust's commit, which can be past commands never handled (see the module's docstring)."""
        data = self.table.data.data
        position = data.get(self.key(partition))
        if cursor_added and position is None and data.get(f"@{partition}") is not None:
            position = self._committed(partition)
            LOG.info(
                "%s[%d]: no cursor in the table yet: starting from the group's commit, %d",
                self.topic,
                partition,
                position,
            )
        self._next[partition] = position or 0
        return self._next[partition]

    def _committed(self, partition: int) -> int:
        """The processor's consumer group's committed offset of ``partition`` (0 if none)."""
        settings = self.runtime.settings
        group = client_config(settings, **{"group.id": self.runtime.app.conf.id, "enable.auto.commit": False})
        consumer = Consumer(group)
        try:
            [committed] = consumer.committed([TopicPartition(self.topic, partition)], timeout=settings.kafka_timeout_s)
            return max(committed.offset, 0)
        finally:
            consumer.close()

    def forget(self, partition: int) -> None:
        self._next.pop(partition, None)

    def position(self, partition: int) -> int:
        """The offset of the partition's next record to handle."""
        return self._next.get(partition, 0)

    def advance(self, partition: int, offset: int) -> None:
        """The record at ``offset`` was handled (its effects durable): move past it, here and in the table."""
        if offset + 1 > self.position(partition):
            self._next[partition] = offset + 1
            self.runtime.put(self.table, partition, self.key(partition), offset + 1)

    def in_order(self, source: Source, value: bytes, handle: Handler) -> bool:
        """Handle a delivered record, after every record of its partition before it that was not handled
        yet (read from Kafka); False if it was handled already. ``handle`` raising leaves the position
        at the record that raised."""
        partition = source.partition
        start = self.position(partition)
        if source.offset < start:
            return False
        if source.offset > start:
            LOG.info(
                "%s[%d]: record %d delivered, %d not handled before it: reading them",
                self.topic,
                partition,
                source.offset,
                source.offset - start,
            )
            self._handle_range(partition, start, source.offset, handle)
            reached = self.position(partition)
            if reached < source.offset:
                raise GapNotRead(f"{self.topic}[{partition}]: records {reached}..{source.offset - 1} not read")
        handle(source, value)
        self.advance(partition, source.offset)
        return True

    def catch_up(self, partition: int, handle: Handler, limit: int | None = None) -> int:
        """Handle every record from the position to the partition's current end, or the next ``limit``
        of them (a take-over: the records left by the previous owner, or by this instance before a
        rebalance, whatever the group's committed offset says; ``processors/catch_up.py``). Returns
        how many were handled: fewer than ``limit`` once the end is reached."""
        start = self.position(partition)
        return self._handle_range(partition, start, None if limit is None else start + limit, handle)

    def _handle_range(self, partition: int, start: int, end: int | None, handle: Handler) -> int:
        handled = 0
        for msg in read_range(self.runtime.settings, self.topic, partition, start, end, pool=self._readers):
            if msg.offset() < self.position(partition):
                continue
            handle(Source(self.topic, partition, msg.offset(), msg.key()), msg.value() or b"")
            self.advance(partition, msg.offset())
            handled += 1
        return handled

    def close(self) -> None:
        self._readers.close()
