"""The sandbox processor: sandbox commands in, provider and supervisor calls, events out.

It runs on the shared runtime (``processors/runtime.py``): every instance joins the consumer group of
the commands topic and owns some of its partitions; a stream (a sandbox) lives in one partition, so
exactly one instance acts on it. Per-sandbox state (``state.SandboxState``) is kept in memory for the
owned partitions and mirrored to a faust table (changelog-backed, key = sandbox id, plus a per-
partition ``@<partition>`` mark: the events-topic offset the table has folded up to, moved by every
write and, past records that change no sandbox, every ``MARK_INTERVAL_S``). When a
partition is assigned, its states come back from the table and only the events after the mark are
read and folded (the events topic stays the source of truth), so start-up cost follows live state,
not history; ended sandboxes leave the table ``ended_grace_s`` after their end.

Order of a command: decide (pure) → append its records (``exec.accepted`` for work) and wait for the
broker → fold them → return, and only then may faust commit the command's offset. Effects run after,
on lanes of their own (an exec a ready sandbox starts at once is handed to its thread before the
append, and gets ready while the broker acknowledges it: its leases and the supervisor's connection;
it starts only once the append was acknowledged): control (stop, cancel, egress), provisions,
file operations (per tenant: ``processors/lanes.py``), and one thread per running command
(bounded by each tenant's exec quota), so 64 long commands hold no thread a stop or a cancel
needs. Cancels (calls to a supervisor, which the sandbox can hang) have a lane apart from stops
and reaps (calls to the engine), and every control call is bounded in time; the periodic reconcile
and the artifact sweep run on threads of their own. Every outcome is settled under the partition's
lock against the current state, only while this instance owns it within its lease
(``runtime.Lease``: a stalled instance that woke up writes and starts nothing).

A command runs once however often it comes. *Redelivered* (the same record again: a crash before its
offset committed, a reset of the group's offsets): the partition's cursor (``processors/cursor.py``,
the ``@commands-<partition>`` table entry) is the offset below which every command was handled, so
it is skipped, with no window in time or count; a command *skipped* by faust (it commits past
records it never handed out) is read from Kafka when a later one arrives, or at the partition's next
take-over, which catches up from the cursor. *Retried* by a client (a new record): the API's
``Idempotency-Key`` (24 h, in PostgreSQL) answers the retry without appending it again; only when
the API instance died between Kafka's acknowledgement and recording it does a retry append the
command again under the same ids, and then a sandbox's ``recent`` ids (its last 256 finished
commands, kept while it lives; an ended sandbox takes no command) drop it. Not covered: that
re-append arriving after 256 later commands of the same sandbox runs it again.

On a rebalance, partitions are first *suspended* (outcomes and a running command's output wait; the
output already queued is flushed), then either kept (work goes on) or lost (a command still read
here is let go, ``Detached``: this instance records nothing more for it). A new owner **recovers**
each sandbox (``state.recover``): started commands are re-attached to (they go on in the sandbox;
``handoff.py`` counts what the stream holds of their output, the supervisor serves the rest), accepted
ones that never started run, half-done provisions complete, and the provider's orphans in its
partitions are reaped. A command is closed as interrupted only when it cannot be read on (its sandbox
is stopping or vanished, or its supervisor does not have it).
"""

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from confluent_kafka import KafkaException, TopicPartition

from astraforge.artifacts import ArtifactStore, make_artifact_store
from astraforge.config import Settings
from astraforge.errors import DecodeError, DeliveryFailed
from astraforge.ids import now_micros
from astraforge.kafka import read_range, reader
from astraforge.processors.artifact_sweep import sweep
from astraforge.processors.base import PartitionedProcessor
from astraforge.processors.lanes import CommandThreads, Gate, TenantLanes
from astraforge.processors.runtime import Fenced, Source, check_partitions
from astraforge.processors.sandboxes.effects import ACTOR, INTERRUPTED, Effects, exec_argv
from astraforge.processors.sandboxes.handoff import Detached
from astraforge.processors.sandboxes.reconcile import orphans
from astraforge.processors.sandboxes.state import (
    ENDED,
    Decision,
    Effect,
    SandboxState,
    decide,
    event,
    evolve,
    reap,
    recover,
    started,
)
from astraforge.processors.sandboxes.warm_pool import WarmPools
from astraforge.sandbox.client import SupervisorUnavailable
from astraforge.sandbox.egress import EgressDecision, EgressProxy
from astraforge.sandbox.providers.base import SandboxProvider
from astraforge.schemas import Envelope

LOG = logging.getLogger(__name__)
NAME = "sandboxes"
RELEVANT = ("sandbox.", "exec.accepted", "exec.started", "exec.finished", "file.", "snapshot.")
ENDED_GRACE_S = 600.0  # an ended sandbox stays this long (a redelivered create must find it ended)
SWEEP_INTERVAL_S = 3600  # the artifact retention sweep (processors/artifact_sweep.py), on a thread of its own
FIRST_SWEEP_S = 60
RECONCILE_INTERVAL_S = 30.0  # owned partitions against the provider: orphans reaped, failed stops retried
MARK_INTERVAL_S = 5.0  # how often the table marks move past records that change no sandbox
# the table caches facts (states and marks over the events topic, the cursor over the commands): its
# changelog records go out every 50 ms, each key once (``Runtime.put``), not 5-6 per exec
WRITE_BATCH_S = 0.05
SUSPENDED_WAIT_S = 60.0  # how long an outcome waits for a rebalance to settle its partition
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 5.0  # backoff of a command whose handling failed transiently
TRANSIENT = (KafkaException, OSError, TimeoutError)  # Kafka or the network away: retry; anything else is poison
# control: the engine (stop, reap) and the egress proxy; cancel talks to the sandbox's supervisor, which the
# sandbox can slow down (each call is bounded by CONTROL_TIMEOUT_S): it never holds a stop's thread
LANES = {"stop": "control", "cancel": "cancel", "egress": "control", "provision": "provision", "read": "files",
         "write": "files", "snapshot": "files"}  # fmt: skip


class SandboxProcessor(PartitionedProcessor):
    name = NAME
    write_batch_s = WRITE_BATCH_S

    def __init__(
        self,
        settings: Settings,
        provider: SandboxProvider,
        artifacts: ArtifactStore | None = None,
        ended_grace_s: float = ENDED_GRACE_S,
        workers: int = 64,
        reconcile_interval_s: float = RECONCILE_INTERVAL_S,
    ) -> None:
        super().__init__(
            settings, copartitioned=[settings.events_topic], suspended_wait_s=SUSPENDED_WAIT_S, fenced=True
        )
        self.provider = provider
        self.artifacts = artifacts or make_artifact_store(settings)
        self.ended_grace_s = ended_grace_s
        self.reconcile_interval_s = reconcile_interval_s
        self.egress = EgressProxy.from_settings(settings, self._report_egress)
        self._closed = False
        self.pools = WarmPools(settings, provider, self.stop_event.is_set)
        self.warm = self.pools.warm
        self.states: dict[str, SandboxState] = {}  # live (and recently ended) sandboxes of owned partitions
        self.taking_over = threading.Lock()
        self.watermarks = reader(settings)  # where each events partition ends (``advance_marks``)
        self.takeovers: list[dict] = []  # per rebalance that brought partitions: what start-up cost
        self._removing: set[str] = set()  # runtime ids a stop or a reap is removing now (one at a time each)
        self._removing_lock = threading.Lock()
        self.effects = Effects(self)
        self.lanes = {
            "control": ThreadPoolExecutor(max_workers=4, thread_name_prefix="sandbox-control"),
            "cancel": ThreadPoolExecutor(max_workers=4, thread_name_prefix="sandbox-cancel"),
            "provision": ThreadPoolExecutor(max_workers=16, thread_name_prefix="sandbox-provision"),
            "files": ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-files"),
        }
        self.commands = CommandThreads("sandbox-command")  # a thread per running command, reused
        # file and snapshot work, which no quota counts: past its share a tenant waits in its own queue
        self.tenant_lanes = TenantLanes(self.lanes["files"], share=workers // 8)

    # -- state ------------------------------------------------------------------------------
    def owns(self, stream_id: str) -> bool:
        """Whether this instance owns the stream's partition now, provably (a moved one is the new
        owner's; one whose lease lapsed may be already): asked before every provider action."""
        return self.ownership.may_write(self.partition_of(stream_id))

    def may_act(self, stream_id: str) -> bool:
        """Whether an effect queued for the stream may still start: the lease holds and the partition is
        ours or suspended by a rebalance under way (a lost one's effects are the new owner's)."""
        return self.runtime.lease.valid() and self.ownership.held(self.partition_of(stream_id))

    def _stamp(self, partition: int) -> int:
        """The timestamp for records written now for ``partition`` (``Runtime.stamp``); ``Fenced`` if not ours."""
        if not self.ownership.owns(partition):
            raise Fenced(f"partition {partition} is not owned now")
        return self.runtime.stamp()

    def _fold(self, e: Envelope, offset: int | None = None) -> str:
        sid = e.sandbox_id or e.stream_id
        new = evolve(self.states.get(sid), e, offset)
        if new is None:
            self.states.pop(sid, None)
        else:
            self.states[sid] = new
        return sid

    def _stamper(self, partition: int) -> Callable[[], int]:
        """Writes raise ``Fenced`` unless the partition is owned within the lease; the records carry the
        lease's stamp, so the broker refuses them if they arrive after it ended."""
        return functools.partial(self._stamp, partition)

    def _stream_of(self, key: str, state: SandboxState) -> str:
        return state.stream_id  # a run's sandbox lives in its run's stream

    def settle(self, sandbox_id: str, decide_events: Callable[[SandboxState], list[Envelope]]) -> bool:
        """Compute records from the sandbox's current state and write them, as its partition's owner.
        False (nothing written) if there was nothing to write or the partition is no longer ours."""
        st = self.states.get(sandbox_id)
        if st is None:
            return False
        partition = self.partition_of(st.stream_id)
        lapsed = not self.runtime.lease.valid()  # a stalled instance waking up: say what became of its outcome
        while self.ownership.owned_now(partition):
            with self.ownership.locks[partition]:
                current = self.states.get(sandbox_id)
                try:
                    written = current is not None and self._emit_locked(partition, decide_events(current))
                except Fenced:
                    continue  # suspended, or the lease lapsed, meanwhile
                if lapsed:
                    LOG.info(
                        "outcome for %s after a lapsed lease: %s",
                        sandbox_id,
                        "written" if written else "nothing to write",
                    )
                return written
        LOG.info("outcome for %s dropped: partition %d is no longer ours", sandbox_id, partition)
        return False

    def emit(self, sandbox_id: str, events: list[Envelope]) -> bool:
        return self.settle(sandbox_id, lambda _: events)

    def send(self, event: Envelope) -> None:
        """Queue a record that changes no state (egress decisions): ordered before the next ``settle``.
        Stamped with the lease like every write (dropped once it lapsed), and dropped once the stream's
        partition is gone. A command's output goes through ``record_output`` instead, which never drops:
        the partition's next owner counts what was recorded to re-attach from there."""
        if not self.ownership.held(self.partition_of(event.stream_id)):
            return
        try:
            stamp = self.runtime.stamp()
        except Fenced:
            return
        self.producer.send(event, timestamp=stamp)
        self.producer.poll(0)

    def record_output(self, event: Envelope, epoch: int) -> None:
        """Queue a command's output record (it changes no state: ordered before the next ``settle``).
        While a rebalance has the partition suspended (or the lease lapsed while it is owned) this
        waits: nothing is recorded that the partition's next owner would not count when it
        re-attaches (``handoff.py``); the supervisor keeps the output meanwhile. Raises ``Detached``
        once the partition was dropped since ``epoch`` (``epochs``: also when this instance took it
        back since, e.g. after a missed generation, and re-attached itself): the caller stops reading
        the command and records nothing more."""
        partition, owner = self.partition_of(event.stream_id), self.ownership
        while True:
            if owner.epoch(partition) != epoch:
                raise Detached(f"partition {partition} was given away since the command was read here")
            if not owner.owned_now(partition):
                if not owner.held(partition):
                    raise Detached(f"partition {partition} is no longer ours")
                continue  # a rebalance (or a lapsed lease) longer than the wait: still not given away
            with owner.output_locks[partition]:  # the suspension waits for a record being queued
                if owner.epoch(partition) != epoch or not owner.may_write(partition):
                    continue
                try:
                    stamp = self.runtime.stamp()
                except Fenced:
                    continue
                self.producer.send(event, timestamp=stamp)
            self.producer.poll(0)
            return

    def read_command(self, stream_id: str, offset: int) -> Envelope | None:
        """The command at ``offset`` of the stream's partition of the commands topic."""
        partition = self.partition_of(stream_id)
        for msg in read_range(self.settings, self.settings.commands_topic, partition, offset, offset + 1):
            with contextlib.suppress(DecodeError):
                return self.codec.decode(msg.value())
        return None

    # -- the partition loop -----------------------------------------------------------------
    async def deliver(self, source: Source, value: bytes) -> None:
        """One command at a time, each partition's in offset order from its cursor (``processors/
        cursor.py``). Faust acknowledges each record after this body, handled or not: its commit only
        says where reading starts; the cursor says what was handled, and a record left here (its
        partition fenced while the group rebalances, or stopping) is read again from the cursor by
        the partition's next take-over, on this instance or another."""
        try:
            await self._handle_until_done(source, value)
        except Exception:  # the loop never dies
            LOG.exception("command at %s[%d]@%d not handled", source.topic, source.partition, source.offset)

    async def _handle_until_done(self, source: Source, value: bytes) -> bool:
        """Handle a command, retrying transient failures (Kafka, the network, a lapsed lease) with a
        backoff: a command is never skipped. False if it was left for the partition's next take-over
        (stopping, not ours, or the group rebalances): every take-over catches up from the cursor, so
        a record left here is handled there, before any later one."""
        delay = RETRY_FIRST_S
        while True:
            try:
                await asyncio.to_thread(self.handle, source, value)
                return True
            except Fenced as e:
                LOG.info("command at %s[%d]@%d waits: %s", source.topic, source.partition, source.offset, e)
            except Exception:
                LOG.exception("command at %s[%d]@%d failed; retrying", source.topic, source.partition, source.offset)
            gone = source.partition not in self.runtime.assigned
            if self.stop_event.is_set() or gone or self.runtime.app.rebalancing:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def handle(self, source: Source, value: bytes) -> None:
        """Handle a delivered command as its partition's owner, after the commands before it that this
        partition's cursor has not passed yet (``CommandCursor.in_order``); a command already passed
        is skipped (redelivered: a crash before faust's commit, a reset of the group's offsets).
        Raises ``Fenced`` unless the partition is owned within the lease, and a transient error
        (``TRANSIENT``) to be retried."""
        partition = source.partition
        with self.ownership.locks[partition]:
            if not self.ownership.may_write(partition):
                raise Fenced(f"partition {partition} is not provably ours (suspended, or the lease lapsed)")
            self.cursor.in_order(source, value, self._handle_one)

    def _handle_one(self, source: Source, value: bytes) -> None:
        """Decide and append a command's records (durably), then dispatch its effects (the caller holds
        the partition's lock and owns it; the cursor moves past the command once this returns).

        A record that does not decode, and a command whose handling fails for any other reason than
        an unavailable Kafka or network (``TRANSIENT``: raised, and retried by the loop), is poison:
        it goes to the dead-letter topic with its reason, and the partition goes on."""
        try:
            command = self.codec.decode(value)
        except DecodeError as e:
            self.dead_letter(source, value, str(e))
            return
        if not command.type.startswith("sandbox."):
            return
        sid = command.sandbox_id or command.stream_id
        partition = self.partition_of(command.stream_id)
        if source.topic == self.settings.commands_topic and source.partition != partition:
            reason = f"misrouted: stream {command.stream_id} belongs to partition {partition}, not {source.partition}"
            self.dead_letter(source, value, reason)
            return
        early: tuple[Effect, Gate] | None = None
        acknowledged = False
        try:
            decision = decide(self.states.get(sid), command, source.offset, ACTOR)
            at_once = self._started_at_once(sid, decision)
            early = self._hand_over_early(sid, decision) if at_once else None
            self._emit_locked(partition, [*decision.events, *at_once])
            acknowledged = True
        except (*TRANSIENT, Fenced):
            raise
        except Exception as e:  # a command we cannot act on: set it aside, go on
            LOG.exception("command %s on %s failed", command.type, sid)
            self.dead_letter(source, value, f"{type(e).__name__}: {e}")
            return
        finally:
            if early is not None and acknowledged:
                early[1].open()
            elif early is not None:
                early[1].cancel()
        self.dispatch(sid, [e for e in decision.effects if early is None or e is not early[0]])

    def _hand_over_early(self, sandbox_id: str, decision: Decision) -> tuple[Effect, Gate] | None:
        """Hand the exec a ready sandbox starts at once to its thread before its records are appended:
        it gets ready meanwhile (``Effects._prepare``: nothing the command could see) and runs only
        once they are acknowledged (``Gate``: the caller opens it after the append and the fold, or
        cancels it when the append failed)."""
        run = next((e for e in decision.effects if e.kind == "exec"), None)
        if run is None or self.stop_event.is_set():
            return None
        gate = Gate()
        self.commands.submit(self.effects.run, sandbox_id, run, gate)
        return run, gate

    def _started_at_once(self, sandbox_id: str, decision: Decision) -> list[Envelope]:
        """An exec accepted by a ready (or busy) sandbox also starts in the same append: its
        ``exec.started`` follows its ``exec.accepted``, both acknowledged before the command runs
        and before its offset commits (one broker round trip and one hand-over fewer per command;
        the exec effect sees it running and only runs it). Whoever owns the partition next closes
        it as interrupted if this instance stops before it ends, as any started command."""
        run = next((e for e in decision.effects if e.kind == "exec"), None)
        state = self.states.get(sandbox_id)
        if run is None or state is None:
            return []
        for e in decision.events:
            state = evolve(state, e)
        p = run.command.payload
        return started(state, p["command_id"], exec_argv(p), p["cwd"], ACTOR, run.command)

    def dispatch(self, sandbox_id: str, effects: Iterable[Effect]) -> None:
        """Each effect on its lane: control, provision, files; a command (exec, resume) on a thread of its own."""
        for effect in effects:
            if self.stop_event.is_set():
                return
            lane = LANES.get(effect.kind)
            if lane is None:
                self.commands.submit(self.effects.run, sandbox_id, effect)
            elif lane == "files":
                st = self.state(sandbox_id)
                self.tenant_lanes.submit(st.tenant_id if st else "", self.effects.run, sandbox_id, effect)
            else:
                self.lanes[lane].submit(self.effects.run, sandbox_id, effect)

    def refill_soon(self) -> None:
        if not self.stop_event.is_set():
            self.lanes["provision"].submit(self.pools.refill)

    # -- ownership --------------------------------------------------------------------------
    def _suspend_now(self, partitions: frozenset[int]) -> None:
        # a write under way (or an output record being queued) ends first; a take-over begun before
        # this one is stale: it must not mark anything owned
        self.ownership.suspend(partitions)
        # every output record queued before the suspension is in the stream before the next owner
        # counts what it holds (``handoff.py``): none is queued after it
        try:
            self.producer.flush(self.settings.kafka_timeout_s)
        except DeliveryFailed:  # Kafka away: one landing after the next owner counted is recorded twice
            LOG.exception("output records not flushed at the revocation")

    async def _assigned(self, partitions: frozenset[int]) -> None:
        await asyncio.to_thread(self._take_over, partitions, self.ownership.revocations, self.runtime.continued)

    def _take_over(self, assigned: frozenset[int], revocations: int, continued: bool = True) -> None:
        """Own ``assigned``: drop the partitions lost, load the new ones, then mark them all owned, unless
        a revocation came while this ran (``revocations`` is the count when the assignment was
        announced): then the assignment is already stale, and what it loaded is dropped again.

        A partition held before counts as kept only if this assignment came straight after the one
        that gave it (``continued``): an instance the group dropped (stalled past its session) may get
        a partition back that another owned meanwhile, so it reloads every partition.

        Last, every assigned partition catches up from its cursor, on a thread of its own (``CatchUp``:
        a backlog does not hold the rebalance hook): commands left unhandled by the previous owner,
        or by this instance during the rebalance, are handled after the new partitions' recovery (a
        command handled before it would count as left open by the previous owner) and before any
        newer record of theirs, whatever the group's committed offset says."""
        with self.taking_over:  # one take-over at a time: a stale one finishes before the next begins
            began = time.monotonic()
            new, lost = self.ownership.changes(assigned, continued)
            for p in lost:
                self._drop(p)
            loaded = folded = 0
            for p in sorted(new):
                with self.ownership.locks[p]:
                    n, m = self._load(p)
                    loaded, folded = loaded + n, folded + m
            if not self.ownership.own(assigned, revocations):
                for p in new:
                    self._drop(p)
                LOG.info("take-over of partitions %s abandoned: revoked while it loaded", sorted(assigned))
                return
        if new:
            self.reconcile(new)
            took = {
                "partitions": sorted(new),
                "sandboxes": loaded,
                "events_read": folded,
                "seconds": round(time.monotonic() - began, 3),
            }
            self.takeovers.append(took)
            LOG.info(
                "took over partitions %(partitions)s: %(sandboxes)d sandboxes from the table, "
                "%(events_read)d events read after its marks, %(seconds).2fs",
                took,
            )
        self.catch_up.start(assigned)

    def _drop(self, partition: int) -> None:
        """The partition is gone (its epoch moves on: a command read here before lets go, even if the
        partition comes back): its states, cursor and egress rules go with it."""
        self.ownership.drop(partition, lambda: self._forget(partition))

    def _forgotten(self, sandbox_id: str) -> None:
        self.egress.close(sandbox_id)
        self.effects.forget(sandbox_id)

    def _load(self, partition: int) -> tuple[int, int]:
        """This partition's states and cursor from the table, then the events written after its mark."""
        self.cursor.load(partition)
        loaded = 0
        for key, value in self.stored():
            st = SandboxState.from_json(value)
            if self.partition_of(st.stream_id) == partition:
                self.states[key] = st
                loaded += 1
        touched, end, mark = self.fold_after_mark(
            partition, lambda e: bool(e.sandbox_id) and e.type.startswith(RELEVANT)
        )
        now = now_micros()
        for sid in list(touched):  # ended long ago (a first start reading old history): never enters the table
            st = self.states.get(sid)
            if st is not None and st.state in ENDED and now - st.ended_at > self.ended_grace_s * 1_000_000:
                del self.states[sid]
                if sid not in self.table.data.data:
                    touched.discard(sid)
        self._persist(partition, touched, end)
        return loaded, end - mark

    def reconcile(self, partitions: Iterable[int]) -> None:
        """Finish or close what the previous owner of ``partitions`` left open; reap their orphans."""
        partitions = set(partitions)
        present = self.provider.list_ids()
        here = self.effects.working()  # a partition reloaded after a missed generation: what runs here goes on
        for st in list(self.states.values()):
            if self.partition_of(st.stream_id) in partitions:
                decision = recover(st, st.runtime_id in present, ACTOR, INTERRUPTED, here)
                self.emit(st.sandbox_id, decision.events)
                self.dispatch(st.sandbox_id, decision.effects)
        self._clean_up(present, partitions)

    def reconcile_owned(self) -> None:
        """The periodic pass over the owned partitions (one ``list_ids``): the stop of every sandbox
        left ``stopping`` (its stop failed, e.g. the engine did not answer) is tried again, and the
        provider's orphans (a failed reap, a failed provision's rollback) are reaped."""
        owned = {p for p in list(self.ownership.status) if self.ownership.may_write(p)}  # a stalled one reaps nothing
        if not owned:
            return
        present = self.provider.list_ids()
        for st in list(self.states.values()):
            if st.state == "stopping" and self.partition_of(st.stream_id) in owned and not self.removing(st.runtime_id):
                self.dispatch(st.sandbox_id, [Effect("stop", reason="stop retried after a failure")])
        self._clean_up(present, owned)

    def _clean_up(self, present: set[str], partitions: set[int]) -> None:
        """Reap the orphans of ``partitions`` and adopt this instance's unclaimed warm sandboxes."""
        found = orphans(present, list(self.states.values()), partitions, self.partition_of, self.pools.view(present))
        for runtime_id in found.reap:
            if not self.removing(runtime_id):
                LOG.warning("reaping orphan sandbox %s", runtime_id)
                self.lanes["control"].submit(self._reap_orphan, runtime_id)
        for index, runtime_id in found.adopt:
            self.lanes["provision"].submit(self._adopt, index, runtime_id)

    def removing(self, runtime_id: str) -> bool:
        with self._removing_lock:
            return runtime_id in self._removing

    @contextlib.contextmanager
    def removal(self, runtime_id: str):
        """Yield True to the one caller that may remove ``runtime_id`` now (False while another does)."""
        with self._removing_lock:
            first = runtime_id not in self._removing
            self._removing.add(runtime_id)
        try:
            yield first
        finally:
            if first:
                with self._removing_lock:
                    self._removing.discard(runtime_id)

    def _still_orphan(self, runtime_id: str) -> bool:
        """Checked again when a reap runs, under its partition's lock: it was decided on a look at the
        provider and the states that a rebalance may have overtaken since (the partition moved, its
        states went with it, and the reap waited on the control lane), and the container is then the
        new owner's. A warm sandbox counts as its claimer's; an unclaimed one is this instance's own.
        Not covered: a rebalance in the instant between this check and the provider's call."""
        sandbox_id = self.pools.claimed_by(runtime_id) if self.pools.is_warm(runtime_id) else runtime_id
        if sandbox_id is None:
            return True
        partition = self.partition_of(sandbox_id)
        with self.ownership.locks[partition]:
            st = self.states.get(sandbox_id)
            return self.ownership.may_write(partition) and (st is None or st.state in ENDED)

    def _reap_orphan(self, runtime_id: str) -> None:
        with self.removal(runtime_id) as mine:
            if not mine or not self._still_orphan(runtime_id):
                return
            try:
                self.provider.stop(runtime_id)
            except Exception:  # the next periodic reconcile tries again
                LOG.exception("orphan sandbox %s not reaped", runtime_id)
                return
            self.pools.forget(runtime_id)

    def _adopt(self, index: int, runtime_id: str) -> None:
        handle = self.provider.handle(runtime_id)
        try:
            healthy = handle is not None and bool(handle.client.ping())
        except (SupervisorUnavailable, OSError):
            healthy = False
        if healthy:  # an unclaimed warm sandbox survives a restart; one claimed since the look is left
            self.pools.adopt(index, runtime_id)
        elif self.pools.claimed_by(runtime_id) is None:  # a claimed one is its claimer's, even unwell
            self._reap_orphan(runtime_id)

    # -- egress -----------------------------------------------------------------------------
    def _report_egress(self, sandbox_id: str, d: EgressDecision) -> None:
        st = self.state(sandbox_id)
        if st is None:
            return
        payload = {
            "command_id": d.command_id,
            "host": d.host,
            "port": d.port,
            "method": d.method,
            "url": d.url,
            "reason": d.reason,
            "credential_injected": d.credential_injected,
            "address": d.address,
            "suppressed": d.suppressed,
        }
        self.send(event(st, "egress.allowed" if d.allowed else "egress.denied", payload, ACTOR))

    # -- timers -----------------------------------------------------------------------------
    def tick(self) -> None:
        """Idle/TTL reaping and the end of ended sandboxes' grace, for owned partitions only."""
        now = now_micros()
        for st in list(self.states.values()):
            partition = self.partition_of(st.stream_id)
            if not self.ownership.owns(partition):
                continue
            if st.state in ENDED:
                if now - st.ended_at > self.ended_grace_s * 1_000_000:
                    with self.ownership.locks[partition]:
                        if self.states.get(st.sandbox_id) is st:
                            del self.states[st.sandbox_id]
                            self.effects.forget(st.sandbox_id)
                            self._persist(partition, [st.sandbox_id], None)
                continue
            decision = reap(st, now, ACTOR)
            if decision.events and self.settle(st.sandbox_id, lambda now_st: reap(now_st, now, ACTOR).events):
                self.dispatch(st.sandbox_id, decision.effects)

    def advance_marks(self) -> None:
        """Move each owned partition's table mark to the end of its events partition, so a take-over reads
        only what came after (not every chat, output or other processor's record since the last sandbox
        command). Sound under the partition's lock: every record before the end that can change a
        sandbox was written and folded by this instance under that lock, or read at its take-over."""
        for partition in [p for p in list(self.ownership.status) if self.ownership.owns(p)]:
            with self.ownership.locks[partition]:
                if not self.ownership.may_write(partition):
                    continue
                tp = TopicPartition(self.settings.events_topic, partition)
                _, end = self.watermarks.get_watermark_offsets(tp, timeout=self.settings.kafka_timeout_s)
                if end > self.mark(partition):
                    self._persist(partition, [], end)

    def _sweep_artifacts(self) -> None:
        try:
            result = sweep(self.settings, self.artifacts, self.producer, datetime.now(UTC))
            if result.expired or result.removed_keys:
                LOG.info("artifact sweep: %d expired, %d keys removed", result.expired, result.removed_keys)
        except Exception:  # the next sweep retries; nothing is lost by a failed one
            LOG.exception("artifact sweep failed")

    def _every(self, name: str, first_s: float, interval_s: float, job: Callable[[], None]) -> threading.Thread:
        """Run ``job`` on a thread of its own every ``interval_s`` until ``stop``: a long one (an
        artifact sweep scans for hours) holds no lane that control or provisions need."""

        def loop() -> None:
            wait = first_s
            while not self.stop_event.wait(wait):
                try:
                    job()
                except Exception:
                    LOG.exception("%s failed", name)
                wait = interval_s

        thread = threading.Thread(target=loop, name=f"sandbox-{name}", daemon=True)
        thread.start()
        return thread

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until ``stop``: the faust app on its thread, the idle/TTL timer and the table marks on
        this one, the periodic reconcile and the artifact sweep on theirs. Refuses to start
        (``ConfigError``) on topics that are not co-partitioned."""
        try:
            check_partitions(self.settings, self.runtime.copartitioned)
        except BaseException:
            self.close()  # refused before it ran: what construction took goes now
            raise
        self.egress.start()
        self.runtime.start()
        self.refill_soon()
        self._every("reconcile", self.reconcile_interval_s, self.reconcile_interval_s, self.reconcile_owned)
        self._every("artifact-sweep", FIRST_SWEEP_S, SWEEP_INTERVAL_S, self._sweep_artifacts)
        next_marks = time.monotonic() + MARK_INTERVAL_S
        try:
            while not self.stop_event.wait(1.0):
                try:
                    self.tick()
                    if time.monotonic() >= next_marks:
                        self.advance_marks()
                        next_marks = time.monotonic() + MARK_INTERVAL_S
                except Exception:
                    LOG.exception("timer failed")
        finally:
            self.ownership.release_all()  # from here nothing is written: the next owner re-attaches to what runs
            with contextlib.suppress(DeliveryFailed):  # the output recorded so far lands before the hand-over
                self.producer.flush(self.settings.kafka_timeout_s)
            self.close()

    def close(self) -> None:
        """Release every client, loop and thread pool construction took (``run`` ends with it; a processor
        built and never run — tests drive rebalance hooks by hand — must be closed too). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop_event.set()  # a take-over's catch-up (on a thread of its own) ends at its next batch
        self.runtime.close()
        self.egress.stop()
        for lane in self.lanes.values():
            lane.shutdown(wait=False, cancel_futures=True)
        self.pools.wait_refilled()  # a refill under way finishes its one create: nothing appears after
        self.catch_up.wait(self.settings.kafka_timeout_s)  # a batch under way ends before its reader closes
        self.producer.close()
        self.watermarks.close()
        self.cursor.close()
        self.effects.guard.close()
