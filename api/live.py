"""The live tail: one Kafka consumer per API process, fanning new records out to SSE clients.

It starts at the end of every partition and remembers, per partition, the next offset it will
deliver. ``subscribe`` snapshots those positions under the same lock the dispatcher holds, so
every record is either delivered to the new subscriber's queue or lies below the snapshot (and is
served by replay from the projection or Kafka). That makes replay + live gap-free.

A subscriber takes decoded records (``Positioned``: the command service) or SSE frames
(``LiveFrame``: the SSE route). A record's frame is built once, by the tail, for every subscriber
of its stream, straight from its bytes (``frames.from_bytes``).
"""

import asyncio
import logging
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, TopicPartition

from astraforge.api import frames
from astraforge.config import Settings
from astraforge.errors import KafkaUnavailable
from astraforge.kafka import Positioned, ReaderPool, high_watermarks, poll_batch, tailer
from astraforge.schemas import Codec, default_codec

LOG = logging.getLogger(__name__)
MAX_QUEUE = 20_000
MAX_QUEUE_BYTES = 16 * 1024 * 1024  # of record values: exec.output records carry up to 64 KiB each
CONTACT_EVERY_S = 2.0  # the tail asks Kafka for metadata this often (its answer is /health's)
HEALTHY_WITHIN_S = 3 * CONTACT_EVERY_S


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """A record's SSE frame (``frames.from_record``'s text) and its offset, shared by every
    subscriber of the stream."""

    offset: int
    text: str


@dataclass(eq=False)
class Subscriber:
    stream_id: str
    tenant_id: str
    positions: dict[int, int]
    loop: asyncio.AbstractEventLoop
    frames: bool = False  # LiveFrame items instead of Positioned ones
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    overflowed: bool = False
    queued_bytes: int = 0

    def offer(self, item: Positioned | LiveFrame | None, size: int = 0) -> None:
        """Runs on the event loop. ``None`` tells the reader it fell too far behind: more than
        MAX_QUEUE records or MAX_QUEUE_BYTES of them waiting (a client that reads nothing must not
        hold the API's memory; it resumes by offset)."""
        if self.overflowed:
            return
        if self.queue.qsize() >= MAX_QUEUE or self.queued_bytes + size > MAX_QUEUE_BYTES:
            self.overflowed = True
            self.queue.put_nowait(None)
        else:
            self.queued_bytes += size
            self.queue.put_nowait((item, size))

    async def next(self) -> Positioned | LiveFrame | None:
        """The next record, or None once the reader has fallen too far behind."""
        entry = await self.queue.get()
        if entry is None:
            return None
        item, size = entry
        self.queued_bytes -= size
        return item

    def drain(self, limit: int) -> list[Positioned | LiveFrame | None]:
        """Up to ``limit`` records already waiting, without waiting (a burst is sent as one chunk);
        a ``None`` among them ends them, as from ``next``."""
        items: list[Positioned | LiveFrame | None] = []
        while len(items) < limit and not self.queue.empty():
            entry = self.queue.get_nowait()
            if entry is None:
                items.append(None)
                break
            item, size = entry
            self.queued_bytes -= size
            items.append(item)
        return items

    def offer_many(self, entries: list[tuple[Positioned | LiveFrame, int]]) -> None:
        """Runs on the event loop: a poll's records for this subscriber (with their sizes), in order,
        for one wake-up."""
        for item, size in entries:
            self.offer(item, size)


class LiveTail:
    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.settings = settings
        self.codec = codec or default_codec()
        self.topic = settings.events_topic
        self._subs: dict[str, set[Subscriber]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.positions: dict[int, int] = {}
        self.ready = threading.Event()
        self.last_contact = 0.0  # time.monotonic() of the last metadata answer from Kafka (for /health)
        self.readers = ReaderPool(settings)  # short reads (SSE gap fills) borrow these

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.readers.close()

    def healthy(self) -> bool:
        """Connected, and Kafka answered a poll within the last few seconds."""
        return self.ready.is_set() and time.monotonic() - self.last_contact < HEALTHY_WITHIN_S

    def subscribe(self, stream_id: str, tenant_id: str, frames: bool = False) -> Subscriber:
        """Never waits (it runs on the event loop): before the tail is connected, 503 at once.
        With ``frames`` the subscriber receives ``LiveFrame`` items, else ``Positioned`` ones."""
        if not self.ready.is_set():
            raise KafkaUnavailable("live tail is not connected to Kafka")
        with self._lock:
            sub = Subscriber(stream_id, tenant_id, dict(self.positions), asyncio.get_running_loop(), frames)
            self._subs.setdefault(stream_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            subs = self._subs.get(sub.stream_id)
            if subs:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.stream_id]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tail()
            except Exception:  # keep the tail alive across broker hiccups; clients resume by offset
                LOG.exception("live tail failed; retrying")
                self._stop.wait(1)

    def _tail(self) -> None:
        consumer = tailer(self.settings)
        try:
            marks = high_watermarks(consumer, self.topic, self.settings.kafka_timeout_s)
            with self._lock:
                for partition, high in marks.items():
                    self.positions.setdefault(partition, high)  # after a reconnect: resume, no gap
                start = dict(self.positions)
            consumer.assign([TopicPartition(self.topic, p, o) for p, o in start.items()])
            self.last_contact = time.monotonic()  # the watermarks just came from the broker
            self.ready.set()
            while not self._stop.is_set():
                if time.monotonic() - self.last_contact > CONTACT_EVERY_S:
                    self._check_contact(consumer)
                self._dispatch(poll_batch(consumer, 500, timeout=0.1))
        finally:
            consumer.close()

    def _check_contact(self, consumer) -> None:
        """An empty poll says nothing about the broker (it returns the same when Kafka is down):
        a metadata request does. Its answer is what /health reports."""
        try:
            consumer.list_topics(self.topic, timeout=CONTACT_EVERY_S)
        except KafkaException:
            return
        self.last_contact = time.monotonic()

    def _dispatch(self, messages: list) -> None:
        """Positions move under the lock (so a subscribe's snapshot is exact); records are decoded
        outside it (subscribe runs on the event loop) and each subscriber gets one call per poll."""
        wanted = []
        with self._lock:
            for msg in messages:
                if msg.error():
                    continue
                self.positions[msg.partition()] = msg.offset() + 1
                subs = self._subs.get((msg.key() or b"").decode(errors="replace"))
                if subs:
                    wanted.append((msg, tuple(subs)))
        deliveries: dict[Subscriber, list[tuple[Positioned | LiveFrame, int]]] = {}
        for msg, subs in wanted:  # a subscriber added since lies above these (its snapshot is later)
            built = self._build(msg, subs)
            if built is None:
                continue  # dead-lettered by the projector; never shown in a stream
            tenant, record, frame = built
            size = len(msg.value() or b"")
            for sub in subs:
                item = frame if sub.frames else record
                if sub.tenant_id == tenant and item is not None:
                    deliveries.setdefault(sub, []).append((item, size))
        for sub, entries in deliveries.items():
            sub.loop.call_soon_threadsafe(sub.offer_many, entries)

    def _build(self, msg, subs: tuple[Subscriber, ...]) -> tuple[str, Positioned | None, LiveFrame | None] | None:
        """``(tenant, record, frame)`` of a message: the decoded record only if a subscriber takes
        records, the frame (once, whatever the number of SSE clients) only if one takes frames and
        the record can be framed. Raises nothing: positions have moved past the whole poll."""
        partition, offset, value = msg.partition(), msg.offset(), msg.value()
        record = frame = None
        if any(sub.frames for sub in subs):
            fast = frames.from_bytes(self.codec, partition, offset, value)
            if fast is not None:
                tenant, text = fast
                frame = LiveFrame(offset, text)
        if frame is None or not all(sub.frames for sub in subs):
            try:
                envelope = self.codec.decode(value)
            except Exception:
                return None
            tenant, record = envelope.tenant_id, Positioned(partition, offset, envelope)
            if frame is None and any(sub.frames for sub in subs):
                # occurred_at past years 1-9999 has no frame: dead-lettered by the projector, never in a stream
                with suppress(ValueError, OverflowError):
                    frame = LiveFrame(offset, frames.from_record(record))
        return tenant, record, frame
