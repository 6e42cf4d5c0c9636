"""The runtime every stream processor shares: a faust-streaming app per processor, built from Settings.

One ``Runtime`` is one instance of one processor (the faust app id is ``<topic prefix>-<name>``, so
every instance of a processor joins one consumer group and Kafka splits the source topic's
partitions among them). Faust runs on a thread and event loop of its own, so a processor's blocking
work (Docker, the supervisor, confluent-kafka) stays in ordinary threads and a test can run an
instance inside its own process.

What the runtime gives a processor:

- **Ownership.** ``owned`` is the set of source-topic partitions this instance holds *and* whose
  tables are recovered. ``on_revoked`` hooks run when a rebalance starts taking partitions away
  (after faust has drained the records in flight, before another instance can get them);
  ``on_assigned`` hooks run when it ends (tables recovered from their changelogs, before any record
  is processed) with the partitions now owned. Only the owner of a stream's partition may act on it.
- **Tables co-partitioned with the source topic.** Our producer partitions by CRC32 of the stream id
  (``astraforge.kafka.partition_for``), not by faust's murmur2, so writes name their partition:
  ``put``/``delete`` write the value and its changelog record to that partition, from any thread.
- **Durable accept** (``append_durably``): records are appended and acknowledged before the handler returns,
  and only then does the processor's own cursor (``processors/cursor.py``) move past the command: a
  command is a fact before it counts as handled. Faust's committed offset is not trusted for that
  (it commits past records it never handed out: tests/scale/test_faust_commit.py); it only says
  where reading starts. Delivery is at-least-once; handlers are idempotent.
- **Dead letters** (``dead_letter``): an unusable record is copied, with why and where from, to the
  dead-letter topic, acknowledged, and then skipped.

- **Fencing** (``Lease``, ``stamp``): an instance stalled past its session timeout (SIGSTOP, a long
  GC pause, a frozen VM) has lost its partitions without knowing it. Its lease says how long it
  provably has not: a heartbeat or SyncGroup the group coordinator acknowledged proves membership
  from the moment it was sent until the session timeout after (less ``LEASE_MARGIN_S``). A processor
  checks the lease under the partition's lock before each write and provider action, and stamps its
  records with ``stamp()`` (the lease's end minus the events topic's ``message.timestamp.before.max.ms``),
  so the broker refuses a record that arrives after the lease ended, even one that passed the check
  just before the process froze. Table writes are checked on the loop that sends them. After a
  rebalance, partitions held before count as kept only if no group generation passed without this
  instance (``continued``): otherwise another instance may have owned them meanwhile.
  Chosen over Kafka transactions (a transactional producer per partition, fenced by the next
  owner's ``init_transactions``): those cost a commit per outcome and hold output from
  ``read_committed`` readers until it, against an exec budget of 8 ms; the lease costs a clock read.

Not provided: exactly-once (faust's ``processing_guarantee="exactly_once"`` has open upstream bugs);
broker-side fencing of provider calls (docker, a supervisor): a call that stalls between its lease
check and the provider is not refused by anyone; the processor must make its own side effects
idempotent. The lease relies on the broker's and the processors' clocks agreeing within the margin.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust
import mode.threads
from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource

from astraforge.config import Settings
from astraforge.errors import AstraForgeError, ConfigError, DeliveryFailed
from astraforge.kafka import partition_for, unavailable
from astraforge.producers.kafka import Appended, EventProducer, dead_letter_headers
from astraforge.producers.topics import FENCE_WINDOW_MS, MAX_FENCE_WINDOW_MS, admin_client
from astraforge.schemas import Envelope

LOG = logging.getLogger(__name__)
Hook = Callable[[frozenset[int]], Awaitable[None] | None]
STOP_TIMEOUT_S = 15.0  # how long a stop waits for faust's own; then the app is left to the process's exit


class DaemonWorkerThread(mode.threads.WorkerThread):
    """The thread faust runs its Kafka consumer (and a threaded producer) on, as a daemon.

    mode makes these threads non-daemon, and faust's ``App.stop`` does not return when it comes in the
    middle of a rebalance: the consumer thread then kept the whole process alive at exit (a processor
    that was told to stop, or a test run that had passed, never ended). Our ``Runtime`` owns the
    lifecycle: it bounds the stop (``STOP_TIMEOUT_S``) and lets the process end after it."""

    def __init__(self, service: mode.threads.ServiceThread, **kwargs: Any) -> None:
        super().__init__(service, **kwargs)
        self.daemon = True


mode.threads.ServiceThread.Worker = DaemonWorkerThread
SESSION_TIMEOUT_S = 10.0  # how long a killed instance holds its partitions before the group moves them
LEASE_MARGIN_S = 2.0  # the lease ends this long before the coordinator could give the partitions away
WATCH_INTERVAL_S = 0.05  # how often the runtime looks for a (new) group coordinator while it has no lease
HELD_RETRY_S = 0.25  # how often changelog records held by a lapsed lease look for its renewal


@dataclass(frozen=True, slots=True)
class Source:
    """Where a consumed record came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


class Fenced(AstraForgeError, RuntimeError):
    """This instance cannot prove it still owns the partition (its lease lapsed, or the partition is not
    owned now): it must not write or act for it."""


class Lease:
    """Proof that this instance is still a member of its group's current generation.

    The group coordinator moves an instance's partitions only after it has heard nothing from it for
    the session timeout (or after it rejoined and gave them up). Each heartbeat or SyncGroup the
    coordinator acknowledges without error proves membership *from the moment it was sent* (the
    coordinator resets its timer when it receives it, later), so ownership is certain until that
    moment plus the session timeout; the lease ends ``LEASE_MARGIN_S`` before (clock rates, the
    broker's clock). A process stopped past its session timeout wakes up with a lapsed lease.
    """

    def __init__(self, duration_s: float) -> None:
        self.duration_s = duration_s
        self._proved: tuple[float, float] | None = None  # (monotonic, wall) send time of the last proof

    def renew(self, sent_monotonic: float, sent_wall: float) -> None:
        proved = self._proved
        if proved is None or sent_monotonic > proved[0]:
            self._proved = (sent_monotonic, sent_wall)

    def valid(self) -> bool:
        proved = self._proved
        return proved is not None and time.monotonic() < proved[0] + self.duration_s

    def expires_at_ms(self) -> int | None:
        """When the lease ends, in wall-clock milliseconds (None: never proved)."""
        proved = self._proved
        return None if proved is None else int((proved[1] + self.duration_s) * 1000)


def watch_membership(coordinator: Any, lease: Lease) -> None:
    """Renew ``lease`` with every heartbeat and SyncGroup ``coordinator`` (aiokafka's GroupCoordinator)
    gets acknowledged without error. aiokafka has no hook for this: its request method is wrapped."""
    if getattr(coordinator, "_astraforge_lease", None) is lease:
        return
    send = coordinator._send_req

    async def observed(request: Any) -> Any:
        sent = (time.monotonic(), time.time())
        response = await send(request)
        proof = type(response).__name__.startswith(("HeartbeatResponse", "SyncGroupResponse"))
        if proof and getattr(response, "error_code", None) == 0:
            lease.renew(*sent)
        return response

    coordinator._send_req = observed
    coordinator._astraforge_lease = lease


def dead_letter(producer: EventProducer, source: Source, value: bytes, reason: str, consumer: str) -> None:
    """Copy an unusable record to the dead-letter topic with why and where it came from, and wait for
    *its* acknowledgement (the caller's handler returns, and the offset commits, only after). Not a
    global flush: another thread's backlog neither delays nor fails it."""
    headers = dead_letter_headers(reason, consumer, source.topic, source.partition, source.offset)
    producer.append_raw(producer.settings.deadletter_topic, source.key, value or b"", headers)


def append_durably(
    producer: EventProducer,
    events: list[Envelope],
    stopping: Callable[[], bool],
    stamp: Callable[[], int] | None = None,
) -> list[Appended]:
    """Append ``events`` and wait for the broker's acknowledgement, retrying while Kafka is away (never
    skipping). A handler that returns only after this makes its records facts before its input's
    offset can commit: the durable accept. ``stamp`` gives each attempt its records' timestamp
    (``Runtime.stamp``: the broker refuses them once the writer's lease has ended) or raises ``Fenced``."""
    while True:
        try:
            return producer.append_many(events, timestamp=stamp() if stamp else None)
        except DeliveryFailed:
            if stopping():
                raise
            LOG.exception("records not acknowledged; retrying")
            time.sleep(1)


def fence_window_ms(settings: Settings) -> int:
    """The events topic's ``message.timestamp.before.max.ms``: the broker refuses a record whose
    timestamp is older than this. Refuses to start if it is unset (the topic would take a stalled
    instance's records whenever it woke up): ``ensure_topics`` sets it."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.events_topic)
    admin = admin_client(settings)  # held until the answer came: a collected client cancels its requests
    try:
        configs = admin.describe_configs([resource])[resource].result(settings.kafka_timeout_s)
    except KafkaException as e:
        raise unavailable(settings, e) from e
    window = int(configs["message.timestamp.before.max.ms"].value)
    if window > MAX_FENCE_WINDOW_MS:
        raise ConfigError(
            f"topic {settings.events_topic} accepts records of any age (message.timestamp.before."
            f"max.ms={window}), so a stalled instance could not be fenced: run `astraforge dev up` "
            f"(it sets {FENCE_WINDOW_MS})"
        )
    return window


def check_partitions(settings: Settings, topics: Iterable[str]) -> None:
    """Refuse to start on a topic whose partition count is not ``settings.topic_partitions``: streams are
    placed by ``partition_for(stream_id, topic_partitions)``, so a commands or events topic with another
    count puts a stream's commands, facts and table entries in partitions that do not line up."""
    admin = admin_client(settings)
    try:
        found = admin.list_topics(timeout=settings.kafka_timeout_s).topics
    except KafkaException as e:
        raise unavailable(settings, e) from e
    for topic in topics:
        if topic not in found:
            raise ConfigError(
                f"topic {topic} does not exist (run `astraforge dev up`, or create it with "
                f"{settings.topic_partitions} partitions)"
            )
        count = len(found[topic].partitions)
        if count != settings.topic_partitions:
            raise ConfigError(
                f"topic {topic} has {count} partitions but ASTRAFORGE_TOPIC_PARTITIONS is {settings.topic_partitions}: "
                "streams would not be co-partitioned; refusing to start (set the setting to the topics' count)"
            )


def app_id(settings: Settings, processor: str) -> str:
    """The consumer group (and internal topic prefix) of one processor in one deployment."""
    return f"{settings.topic_prefix}-{processor}"


def credentials(settings: Settings) -> faust.SASLCredentials | None:
    """The SASL identity of ``astraforge.kafka.client_config``, in faust's terms."""
    creds = settings.kafka_credentials()
    if creds is None or settings.kafka_security_protocol in ("PLAINTEXT", "SSL"):
        return None
    return faust.SASLCredentials(username=creds.username, password=creds.password, mechanism=creds.mechanism)


def make_app(settings: Settings, processor: str, loop: asyncio.AbstractEventLoop, **conf: Any) -> faust.App:
    """A faust app for one processor: our broker and credentials, in-memory tables restored from their
    changelogs, one standby replica, no web server, offsets from the start of a new group. Faust's
    data directory (empty with in-memory stores, but made anyway) goes under the state dir, not the
    working directory."""
    datadir = settings.state_dir / "faust" / app_id(settings, processor)
    datadir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "datadir": str(datadir),
        "broker_credentials": credentials(settings),
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": 1,
        "table_standby_replicas": 1,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": SESSION_TIMEOUT_S,
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
        "producer_acks": -1,
        "loop": loop,
        **conf,
    }
    return faust.App(app_id(settings, processor), **options)


class Runtime:
    """One instance of one processor: a faust app on its own thread and event loop."""

    def __init__(
        self,
        settings: Settings,
        processor: str,
        source_topic: str,
        copartitioned: Iterable[str] = (),
        write_batch_s: float = 0.0,
        **conf: Any,
    ) -> None:
        self.settings = settings
        # >0 only where every table is a cache of durable facts (``put``): a table that is itself the
        # truth (a count, say) must send each write at once, before faust may commit past its input
        self.write_batch_s = write_batch_s
        self.processor = processor
        self.source_topic = source_topic
        self.copartitioned = (source_topic, *copartitioned)  # topics whose partitions must line up with the source
        self.loop = asyncio.new_event_loop()
        self.app = make_app(settings, processor, self.loop, **conf)
        self.topic = self.app.topic(
            source_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.lease = Lease(SESSION_TIMEOUT_S - LEASE_MARGIN_S)
        self.fence_window_ms = FENCE_WINDOW_MS  # read from the events topic at start
        self.generation: int | None = None  # of the group, at the last assignment
        self.continued = False  # the last assignment came straight after the one before (no generation missed)
        self._assigned: frozenset[int] = frozenset()  # source partitions in the current assignment
        self._owned: frozenset[int] = frozenset()  # ... whose tables are recovered and hooks have run
        self._on_assigned: list[Hook] = []
        self._on_revoked: list[Hook] = []
        self._tables: list[faust.Table] = []
        self._writes: list[tuple[faust.Table, int, str, Any]] = []  # table writes not applied yet (``put``)
        self._writes_lock = threading.Lock()
        self._apply_due = False  # an ``_apply_writes`` is scheduled on the loop
        self._unsent: dict[tuple[int, int, str], tuple[faust.Table, int, str, Any]] = {}  # applied, not sent
        self._send_timer: asyncio.TimerHandle | None = None
        self._holding = False  # writes are held for a lapsed lease (logged once per lapse, not per retry)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._stop_requested = asyncio.Event()
        # weakly: mode keeps a signal's per-sender receivers in a dict its clones share for the life of
        # the process, so a strong receiver kept this runtime, its processor and every client they hold
        # (the test process reached 1,024 fds) long after they were dropped
        self.app.on_partitions_assigned.connect(self._assignment, weak=True)
        self.app.on_partitions_revoked.connect(self._revocation, weak=True)
        self.app.on_rebalance_complete.connect(self._rebalance_complete, weak=True)

    # -- ownership ----------------------------------------------------------------------------
    @property
    def owned(self) -> frozenset[int]:
        """Source partitions this instance owns now (tables recovered)."""
        return self._owned

    def partition(self, stream_id: str) -> int:
        return partition_for(stream_id, self.settings.topic_partitions)

    @property
    def assigned(self) -> frozenset[int]:
        """Source partitions of the current assignment (owned once their tables are recovered)."""
        return self._assigned

    def on_assigned(self, hook: Hook) -> Hook:
        """Run ``hook(partitions)`` after each rebalance with every partition this instance now owns (on
        the loop, tables recovered, before their records are processed). Partitions held before and
        missing now were lost; partitions not held before are new: the hook tells them apart."""
        self._on_assigned.append(hook)
        return hook

    def on_revoked(self, hook: Hook) -> Hook:
        """Run ``hook(partitions)`` when a rebalance takes partitions away (on the loop, after faust drained
        their records in flight, before any other instance can be assigned them). Kafka's eager
        rebalance revokes *every* partition, and many come back: pause work on them, do not drop it."""
        self._on_revoked.append(hook)
        return hook

    def stamp(self) -> int:
        """The timestamp for a record written now under this instance's lease: the lease's end minus the
        events topic's fence window, so the broker refuses the record once the lease has ended, even if
        the process stalls between its checks and the send. Raises ``Fenced`` if the lease has lapsed."""
        expires = self.lease.expires_at_ms()
        if expires is None or not self.lease.valid():
            raise Fenced(f"{self.processor}: no proof of group membership within the session timeout")
        return expires - self.fence_window_ms

    def _watch_coordinator(self) -> None:
        thread = getattr(self.app.consumer, "_thread", None)
        coordinator = getattr(getattr(thread, "_consumer", None), "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "_send_req"):
            watch_membership(coordinator, self.lease)

    async def _watch(self) -> None:
        """Keep the group coordinator watched (it exists once the consumer has started; a restarted
        consumer has a new one): the lease is renewed only by a watched coordinator."""
        while not self._stop_requested.is_set():
            with contextlib.suppress(Exception):
                self._watch_coordinator()
            await asyncio.sleep(WATCH_INTERVAL_S if not self.lease.valid() else 1.0)

    async def _assignment(self, sender: Any, assigned: set, **_: Any) -> None:
        self._watch_coordinator()
        generation = getattr(self.app, "consumer_generation_id", None)
        # partitions kept across this rebalance are still ours only if no generation passed without us
        self.continued = self.generation is not None and generation == self.generation + 1
        self.generation = generation
        if not self.continued:
            self._forget_unsent(None)  # a generation passed without us: held writes may be stale
        self._assigned = frozenset(tp.partition for tp in assigned if tp.topic == self.source_topic)
        if not self._tables or not self._assigned:  # nothing to recover: owned at once
            await self._announce()

    async def _rebalance_complete(self, sender: Any = None, **_: Any) -> None:
        """Faust finished recovering the tables (its signal comes before the streams resume)."""
        await self._announce()

    async def _announce(self) -> None:
        self._owned = self._assigned
        LOG.info("%s owns partitions %s", self.processor, sorted(self._owned))
        await self._run_hooks(self._on_assigned, self._owned)

    async def _revocation(self, sender: Any, revoked: set, **_: Any) -> None:
        self._watch_coordinator()  # before the first JoinGroup: its SyncGroup renews the lease at once
        gone = frozenset(tp.partition for tp in revoked if tp.topic == self.source_topic)
        self._owned -= gone
        self._assigned -= gone
        if gone:
            await self._run_hooks(self._on_revoked, gone)  # they flush what the lease still lets go out
            self._forget_unsent(gone)

    def _forget_unsent(self, partitions: frozenset[int] | None) -> None:
        """Drop the held changelog records of ``partitions`` (every one: ``None``): their next owner has the truth."""
        dropped = {slot for slot in self._unsent if partitions is None or slot[1] in partitions}
        if dropped:
            LOG.info("%s: %d held table writes dropped: their partitions moved", self.processor, len(dropped))
            self._unsent = {slot: w for slot, w in self._unsent.items() if slot not in dropped}
            self._holding = self._holding and bool(self._unsent)

    async def _run_hooks(self, hooks: list[Hook], partitions: frozenset[int]) -> None:
        for hook in hooks:
            try:
                result = hook(partitions)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # a failed hook must not kill the rebalance; it logs and the rest run
                LOG.exception("%s: partition hook %s failed", self.processor, getattr(hook, "__name__", hook))

    # -- tables -------------------------------------------------------------------------------
    def table(self, name: str, **options: Any) -> faust.Table:
        """A table co-partitioned with the source topic; values are JSON-able (dicts, lists, numbers).

        Its changelog is compacted, and compaction only cleans closed segments: they roll every 10
        minutes, so a recovery reads the live entries plus at most ~10 minutes of overwrites and
        tombstones (tombstones themselves go an hour later)."""
        changelog = {
            "segment.ms": str(10 * 60_000),
            "min.cleanable.dirty.ratio": "0.1",
            "delete.retention.ms": str(3_600_000),
        }
        table = self.app.Table(
            name,
            partitions=self.settings.topic_partitions,
            key_type=str,
            extra_topic_configs=changelog,
            loop=self.loop,  # the app's own: bound late, a read from a plain thread made a loop never closed
            **options,
        )
        self._tables.append(table)
        return table

    def put(self, table: faust.Table, partition: int, key: str, value: Any) -> None:
        """Set ``key`` and send its changelog record to ``partition`` (thread-safe; returns at once).

        The value is in the table on the loop's next turn, as a write made there; writes made
        together (a burst from one thread) wake the loop once, and their changelog records are sent
        then. With ``write_batch_s`` (a processor whose tables are caches of durable facts: the
        events topic, the cursor's commands, so what a crash loses of them the next owner's catch-up
        redoes) the records go out in batches, at most that much later, and a key written again
        before its batch went out is sent once, with its last value, in the order of the last
        writes (a mark still follows the states it covers). ``value`` may be a function of no
        arguments, called on the loop (a state's JSON is built there, once per burst, not on the
        writer's thread)."""
        self._queue_write(table, partition, key, value)

    def delete(self, table: faust.Table, partition: int, key: str) -> None:
        """Remove ``key`` and send its tombstone to ``partition`` (thread-safe; returns at once; as ``put``)."""
        self._queue_write(table, partition, key, None)

    def _queue_write(self, table: faust.Table, partition: int, key: str, value: Any) -> None:
        with self._writes_lock:
            self._writes.append((table, partition, key, value))
            wake = not self._apply_due
            self._apply_due = True
        if wake:
            self.call_soon(self._apply_writes)

    def _apply_writes(self) -> None:
        """Put the queued writes in their tables and their records in the batch to send (on the loop)."""
        with self._writes_lock:
            writes, self._writes = self._writes, []
            self._apply_due = False
        for table, partition, key, value in writes:
            try:
                self._put(table, partition, key, value() if callable(value) else value)
            except Exception:  # one write's failure spares the others
                LOG.exception("%s: table write of %s failed", self.processor, key)
        if not self.write_batch_s:
            self._send_batch()
        elif self._unsent and self._send_timer is None:
            self._send_timer = self.loop.call_later(self.write_batch_s, self._send_batch)

    def _put(self, table: faust.Table, partition: int, key: str, value: Any) -> None:
        store = table.data
        if value is None:
            store.data.pop(key, None)
        else:
            store.data[key] = value
        with contextlib.suppress(AttributeError):  # the memory store drops a revoked partition's keys by this map
            store._key_partition[key] = partition
        slot = (id(table), partition, key)
        again = self._unsent.pop(slot, None) is not None  # moved to the end: sent in the order of the last writes
        self._unsent[slot] = (table, partition, key, value)
        if again and not key.startswith("@"):
            # a mark ("@...") queued after the key's earlier write covered it: it must still follow
            # the key, or a crash landing the batch up to the mark would leave the key's older value
            # under a mark past the events that changed it
            for mark in [s for s in self._unsent if s[:2] == slot[:2] and s[2].startswith("@")]:
                self._unsent[mark] = self._unsent.pop(mark)

    def _send_batch(self) -> None:
        """Send the changelog records of the writes applied so far (on the loop)."""
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if not self._unsent:
            return
        if not self.lease.valid():
            # not ours to send while the lease is lapsed (a stalled instance's late writes): held until
            # it is renewed, which proves the partitions never moved (the writes are then the truth:
            # dropping them left the changelog behind the marks sent after them), or dropped by the
            # revocation or missed generation that moved them (``_forget_unsent``)
            if not self._holding:
                LOG.warning("%s: table writes held: the lease lapsed (%d so far)", self.processor, len(self._unsent))
                self._holding = True
            self._send_timer = self.loop.call_later(HELD_RETRY_S, self._send_batch)
            return
        if self._holding:
            LOG.info("%s: the lease is renewed: %d held table writes go out", self.processor, len(self._unsent))
            self._holding = False
        unsent, self._unsent = self._unsent, {}
        for table, partition, key, value in unsent.values():
            try:
                if value is None:
                    table.send_changelog(partition, key, None, value_serializer="raw")
                else:
                    table.send_changelog(partition, key, value)
            except Exception:
                LOG.exception("%s: changelog record of %s not sent", self.processor, key)

    async def flush(self) -> None:
        """Wait until every table write so far is in its changelog (on the loop): the batch waiting
        for its window goes out now (unless the lease has lapsed: then they are held, see ``_send_batch``)."""
        await asyncio.sleep(0)  # let writes scheduled from other threads reach the queue first
        self._apply_writes()
        self._send_batch()
        await self.app.producer.flush()

    # -- loop access from other threads -------------------------------------------------------
    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._stopped.is_set():
            return
        self.loop.call_soon_threadsafe(fn, *args)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> None:
        """Start the app on a thread of its own; returns once faust has started (not yet assigned).
        Raises ``ConfigError`` first if the topics are not co-partitioned (``check_partitions``)."""
        check_partitions(self.settings, self.copartitioned)
        self.fence_window_ms = fence_window_ms(self.settings)
        self._thread = threading.Thread(target=self._serve, name=f"faust-{self.processor}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"{self.processor}: faust did not start within {timeout}s")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            watch = self.loop.create_task(self._watch())
            self.loop.run_until_complete(self.app.start())
            self._started.set()
            self.loop.run_until_complete(self._wait_stopped())
        except Exception:
            LOG.exception("%s: faust app failed", self.processor)
        finally:
            self._started.set()
            with contextlib.suppress(Exception):
                watch.cancel()
            try:
                self.loop.run_until_complete(asyncio.wait_for(self.app.stop(), STOP_TIMEOUT_S))
            except Exception:  # a stop that hangs (mid-rebalance) or fails: the group moves our partitions anyway
                LOG.warning("%s: faust did not stop cleanly within %.0fs", self.processor, STOP_TIMEOUT_S)
            self._stopped.set()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    async def _wait_stopped(self) -> None:
        await self._stop_requested.wait()
        self._apply_writes()
        self._send_batch()  # the batch still in its window goes out with the app's last records

    def close(self) -> None:
        """Stop if started, and release the event loop construction made (a runtime that never ran holds
        one too: its selector and self-pipe are fds of the host process)."""
        self.stop()
        if self._thread is None and not self.loop.is_closed():
            self.loop.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Leave the group (partitions move at once, not after a session timeout) and stop the loop."""
        if self._thread is None or self._stopped.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            self.loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join(timeout)
