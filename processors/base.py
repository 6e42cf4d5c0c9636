"""The wiring every processor of the commands topic shares, written once.

``CommandProcessor``: one instance of a processor on the shared runtime (``processors/runtime.py``):
its producer, its stop event, its faust app joined to the ``<prefix>-<name>`` consumer group of the
commands topic, and the partition loop that hands each delivered record to ``deliver`` as a
``Source`` (the alerts processor, which keeps its offsets in PostgreSQL, is one).

``PartitionedProcessor`` adds what a processor with per-stream state needs (the sandbox processor,
the run orchestrator, the conversation runtime): the states of the owned partitions in memory,
mirrored to a changelog-backed table (key = stream id, plus a ``@<partition>`` mark: the events-topic
offset folded so far), the partitions' ``Ownership`` and locks, the ``CommandCursor`` (what was
handled, per partition: faust's commit is not trusted for it) with its take-over ``CatchUp``, and the
rebalance hooks: a revocation suspends the partitions and flushes the table, an assignment drops the
lost partitions, loads the new ones (the table, then the events after the mark), resumes what they
left under way and catches every assigned partition up from its cursor. A subclass says how a
stream's state is folded, loaded and resumed; the sandbox processor replaces the take-over with its
fenced one.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from astraforge.config import Settings
from astraforge.errors import DecodeError
from astraforge.kafka import read_range
from astraforge.processors.catch_up import CatchUp
from astraforge.processors.cursor import CommandCursor
from astraforge.processors.ownership import SUSPENDED_WAIT_S, Ownership
from astraforge.processors.runtime import Runtime, Source, append_durably, dead_letter
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope

LOG = logging.getLogger(__name__)


class CommandProcessor:
    """One instance of one processor of the commands topic (``name``: its consumer group)."""

    name: ClassVar[str]
    write_batch_s: ClassVar[float] = 0.0  # >0: the table's changelog records go out in batches (``Runtime.put``)

    def __init__(self, settings: Settings, copartitioned: Iterable[str] = ()) -> None:
        self.settings = settings
        self.producer = EventProducer(settings)
        self.codec = self.producer.codec
        self.stop_event = threading.Event()
        self.runtime = Runtime(
            settings, self.name, settings.commands_topic, copartitioned, write_batch_s=self.write_batch_s
        )
        self._wire()
        self.runtime.app.agent(self.runtime.topic, name=f"{self.name}-commands")(self._consume)

    def _wire(self) -> None:
        """Build what the partition loop needs, before the loop is registered with the app."""

    async def _consume(self, stream) -> None:
        async for record in stream.events():
            message = record.message
            await self.deliver(Source(message.topic, message.partition, message.offset, message.key), message.value)

    async def deliver(self, source: Source, value: bytes) -> None:
        """Handle one record faust delivered (on the app's loop: blocking work goes to a thread)."""
        raise NotImplementedError

    def dead_letter(self, source: Source, value: bytes, reason: str) -> None:
        dead_letter(self.producer, source, value, reason, f"processor-{self.name}")

    def append(self, events: list[Envelope]) -> None:
        """Append records (acknowledged) that change no state of this processor's."""
        append_durably(self.producer, events, self.stop_event.is_set)

    def partition_of(self, stream_id: str) -> int:
        return self.runtime.partition(stream_id)

    def stop(self) -> None:
        self.stop_event.set()


class PartitionedProcessor(CommandProcessor):
    """A processor whose per-stream state lives in the owned partitions and their table (see module)."""

    def __init__(
        self,
        settings: Settings,
        copartitioned: Iterable[str] = (),
        suspended_wait_s: float = SUSPENDED_WAIT_S,
        fenced: bool = False,
    ) -> None:
        self._suspended_wait_s, self._fenced = suspended_wait_s, fenced
        super().__init__(settings, copartitioned)

    def _wire(self) -> None:
        self.states: dict[str, Any] = {}
        # fenced: writes also need the runtime's lease (``runtime.Lease``), not only the assignment
        self.ownership = Ownership(self._suspended_wait_s, self.runtime.lease.valid) if self._fenced else Ownership()
        self.table = self.runtime.table(self.name)
        self.cursor = CommandCursor(self.runtime, self.table)  # what was handled, per partition (not faust's commit)
        self.catch_up = CatchUp(self.name, self.ownership, self.cursor, self._handle_one, self.stop_event)
        self.runtime.on_revoked(self._suspend)
        self.runtime.on_assigned(self._assigned)

    # -- what a subclass says -----------------------------------------------------------------
    def _fold(self, e: Envelope, offset: int) -> str:
        """Fold a record into its stream's state; the key of the state it touched."""
        raise NotImplementedError

    def _takes(self, command: Envelope) -> bool:
        """Whether ``command`` is this processor's (the commands topic carries every processor's)."""
        raise NotImplementedError

    def _decide(self, command: Envelope) -> Any:
        """The decision (``.events`` to append) for one of this processor's commands, in its stream's state."""
        raise NotImplementedError

    def _act(self, command: Envelope, decision: Any) -> None:
        """Start what the decision asks for, once its records are facts (under the partition's lock)."""

    def _load(self, partition: int) -> Any:
        """Load a newly owned partition: its cursor, its states from the table, the events after its mark."""
        raise NotImplementedError

    def _resume(self, partitions: set[int]) -> None:
        """Go on with what the previous owner of ``partitions`` left under way (after they are owned)."""

    def _stream_of(self, key: str, state: Any) -> str:
        """The stream (and so the partition) of the state kept under ``key``."""
        return key

    def _forgotten(self, key: str) -> None:
        """The state kept under ``key`` left with its partition: let go of what goes with it."""

    def _persisted(self, events: list[Envelope]) -> bool:
        """Whether writing ``events`` changes a state the table must hold."""
        return True

    def _stamper(self, partition: int) -> Callable[[], int] | None:
        """What stamps the records written for ``partition`` (``Runtime.stamp``), if they are fenced."""
        return None

    # -- state --------------------------------------------------------------------------------
    def state(self, key: str) -> Any:
        return self.states.get(key)

    def owns(self, stream_id: str) -> bool:
        return self.ownership.owns(self.partition_of(stream_id))

    def _persist(self, partition: int, keys: Iterable[str], mark: int | None) -> None:
        """Mirror these states to the table (a tombstone for one gone) and move the partition's mark."""
        for key in keys:
            st = self.states.get(key)
            if st is None:
                self.runtime.delete(self.table, partition, key)
            else:
                self.runtime.put(self.table, partition, key, st.to_json)  # built on the loop, once per burst
        if mark is not None:
            self.runtime.put(self.table, partition, f"@{partition}", mark)

    def _emit_locked(self, partition: int, events: list[Envelope]) -> bool:
        """Append (acknowledged), fold and persist (the caller holds the partition's lock)."""
        if not events:
            return False
        appended = append_durably(self.producer, events, self.stop_event.is_set, self._stamper(partition))
        touched = {self._fold(e, a.offset) for e, a in zip(events, appended, strict=True)}
        if self._persisted(events):
            self._persist(partition, touched, appended[-1].offset + 1)
        return True

    def settle(self, key: str, decide_events: Callable[[Any], list[Envelope]]) -> bool:
        """Records computed from the stream's current state, written as its partition's owner."""
        st = self.states.get(key)
        if st is None:
            return False
        partition = self.partition_of(self._stream_of(key, st))

        def write() -> bool:
            current = self.states.get(key)
            return current is not None and self._emit_locked(partition, decide_events(current))

        return bool(self.ownership.write(partition, write))

    def stored(self) -> Iterator[tuple[str, dict]]:
        """The states in the table (every partition's this instance holds: the caller picks its own)."""
        for key, value in list(self.table.data.data.items()):
            if not key.startswith("@") and isinstance(value, dict):
                yield key, value

    def mark(self, partition: int) -> int:
        """The events-topic offset the partition's table has folded up to."""
        return self.table.data.data.get(f"@{partition}") or 0

    def fold_after_mark(self, partition: int, relevant: Callable[[Envelope], bool]) -> tuple[set[str], int, int]:
        """Fold the partition's events after its mark that ``relevant`` picks: the keys touched, the
        offset read up to, and the mark it started from."""
        mark = self.mark(partition)
        touched, end = set(), mark
        for msg in read_range(self.settings, self.settings.events_topic, partition, mark, None):
            end = msg.offset() + 1
            try:
                e = self.codec.decode(msg.value())
            except DecodeError:
                continue
            if relevant(e):
                touched.add(self._fold(e, msg.offset()))
        return touched, end, mark

    # -- the partition loop -------------------------------------------------------------------
    def _handle_one(self, source: Source, value: bytes) -> None:
        """Decide a command and append its records (durably), then act on the decision (the caller holds
        the partition's lock and owns it; the cursor moves past the command once this returns). A
        command whose decision fails is dead-lettered; a record nobody can read is left to the sandbox
        processor, which dead-letters it (one copy is enough)."""
        try:
            command = self.codec.decode(value)
        except DecodeError:
            return
        if not self._takes(command):
            return
        try:
            decision = self._decide(command)
            self._emit_locked(self.partition_of(command.stream_id), decision.events)
        except (ValueError, KeyError, TypeError) as e:
            LOG.exception("command %s on %s failed", command.type, command.stream_id)
            self.dead_letter(source, value, f"{type(e).__name__}: {e}")
            return
        self._act(command, decision)

    async def deliver(self, source: Source, value: bytes) -> None:
        """Each partition's commands in offset order from its cursor (``processors/cursor.py``): a
        record of a partition not owned now is left to the partition's next take-over, which
        catches up from the cursor (faust's commit only says where reading starts)."""
        try:
            await asyncio.to_thread(self.handle, source, value)
        except Exception:  # the loop never dies: the cursor stays, the next take-over reads it again
            LOG.exception("command at %s[%d]@%d not handled", source.topic, source.partition, source.offset)

    def handle(self, source: Source, value: bytes) -> None:
        """Handle a delivered command as its partition's owner, after the ones before it the cursor has
        not passed yet; nothing if it was handled already (redelivered) or the partition is not ours
        (its next owner catches up)."""
        self.ownership.write(source.partition, lambda: self.cursor.in_order(source, value, self._handle_one))

    # -- ownership ----------------------------------------------------------------------------
    async def _suspend(self, partitions: frozenset[int]) -> None:
        await asyncio.to_thread(self._suspend_now, partitions)
        await self.runtime.flush()  # our last table writes reach the changelog before anyone recovers it

    def _suspend_now(self, partitions: frozenset[int]) -> None:
        self.ownership.suspend(partitions)

    async def _assigned(self, partitions: frozenset[int]) -> None:
        await asyncio.to_thread(self._take_over, partitions)

    def _take_over(self, assigned: frozenset[int]) -> None:
        new, lost = self.ownership.changes(assigned)
        for p in lost:
            self.ownership.drop(p, lambda p=p: self._forget(p))
        for p in sorted(new):
            with self.ownership.locks[p]:
                self._load(p)
        self.ownership.own(assigned)
        self._resume(new)
        self.catch_up.start(assigned)  # commands left unhandled, whatever the group committed (after the hook)

    # -- lifecycle ----------------------------------------------------------------------------
    def _wait_work(self) -> None:
        """Let the work under way on threads of the processor's own end (``close``)."""

    def close(self) -> None:
        """Release what construction took (``run`` ends with it; one built and never run must be closed
        too: its loop and clients are the host process's fds)."""
        self.stop_event.set()
        self.runtime.close()
        self._wait_work()
        self.catch_up.wait(self.settings.kafka_timeout_s)  # a batch under way ends before its reader closes
        with contextlib.suppress(Exception):
            self.producer.close()
        self.cursor.close()

    def _forget(self, partition: int) -> None:
        self.cursor.forget(partition)
        for key, st in list(self.states.items()):
            if self.partition_of(self._stream_of(key, st)) == partition:
                del self.states[key]
                self._forgotten(key)
