"""The run orchestrator: run commands in, run records out; a driver thread per attempt under way.

It is a second processor on the shared runtime (``processors/runtime.py``), shaped like the sandbox
processor: every instance joins the ``runs`` consumer group of the commands topic and acts only on
the runs of the partitions it owns. Per-run state (``state.RunState``) lives in memory for the owned
partitions and in a changelog-backed faust table (key = run id, plus a per-partition ``@<partition>``
mark: the events-topic offset the table has folded up to); a new owner loads the table, folds the
events after the mark, and restarts a driver for every attempt under way (and a merge for every
approved run): drivers repeat nothing already recorded (``processors.runs.driver``).

A command is decided under its partition's lock and its records are acknowledged by Kafka before
the handler returns (durable accept): ``run.accepted`` and ``run.requested`` exist before the
``run.create`` offset commits. Control commands (cancel, review) never wait behind a driver: drivers
run on their own threads and stop at their next step once the state says the attempt is over.

Not provided: a driver of a partition that moved keeps running until its next step (it then sees
the partition is no longer ours and stops writing); the new owner's driver uses the same ids.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from astraforge.artifacts import ArtifactStore, make_artifact_store
from astraforge.config import Settings
from astraforge.errors import DecodeError
from astraforge.kafka import read_range
from astraforge.processors.catch_up import CatchUp
from astraforge.processors.cursor import CommandCursor
from astraforge.processors.ownership import Ownership
from astraforge.processors.runs.driver import ACTOR, Driver
from astraforge.processors.runs.state import DRIVEN, ENDED, RunEffect, RunState, decide, evolve
from astraforge.processors.runs.vcs import make_provider
from astraforge.processors.runtime import Runtime, Source, append_durably, dead_letter
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope, default_codec

LOG = logging.getLogger(__name__)
NAME = "runs"
ENDED_GRACE_S = 3600  # an ended run stays in the table this long (a late command finds it ended)
SWEEP_S = 300.0  # how often an owner forgets the runs that ended more than ENDED_GRACE_S ago


class RunOrchestrator:
    def __init__(
        self, settings: Settings, artifacts: ArtifactStore | None = None, work_dir: Path | None = None
    ) -> None:
        self.settings = settings
        self.codec = default_codec()
        self.producer = EventProducer(settings)
        self.artifacts = artifacts or make_artifact_store(settings)
        token = settings.vcs_token.get_secret_value() if settings.vcs_token else None
        self.vcs = make_provider(settings.vcs_provider, settings.vcs_api_url, token)
        self.work_dir = work_dir or settings.state_dir / "runs"
        self.stop_event = threading.Event()
        self.states: dict[str, RunState] = {}
        self.ownership = Ownership()
        self.drivers: dict[tuple[str, int, str], threading.Thread] = {}
        self.runtime = Runtime(settings, NAME, settings.commands_topic)
        self.table = self.runtime.table(NAME)
        self.cursor = CommandCursor(self.runtime, self.table)  # what was handled, per partition (not faust's commit)
        self.catch_up = CatchUp(NAME, self.ownership, self.cursor, self._handle_one, self.stop_event)
        self.runtime.on_revoked(self._suspend)
        self.runtime.on_assigned(self._assigned)
        self.runtime.app.agent(self.runtime.topic, name=f"{NAME}-commands")(self._consume)

    # -- state ------------------------------------------------------------------------------
    def state(self, run_id: str) -> RunState | None:
        return self.states.get(run_id)

    def partition_of(self, stream_id: str) -> int:
        return self.runtime.partition(stream_id)

    def owns(self, stream_id: str) -> bool:
        return self.ownership.owns(self.partition_of(stream_id))

    def _fold(self, e: Envelope, offset: int) -> str:
        new = evolve(self.states.get(e.stream_id), e)
        if new is not None:
            if e.type == "run.accepted" and not new.events_from:
                new = replace(new, events_from=offset)
            self.states[e.stream_id] = new
        return e.stream_id

    def _persist(self, partition: int, run_ids: Iterable[str], mark: int | None) -> None:
        for run_id in run_ids:
            st = self.states.get(run_id)
            if st is None:
                self.runtime.delete(self.table, partition, run_id)
            else:
                self.runtime.put(self.table, partition, run_id, st.to_json())
        if mark is not None:
            self.runtime.put(self.table, partition, f"@{partition}", mark)

    def append(self, events: list[Envelope]) -> None:
        """Append records that change no run state (sandbox commands), acknowledged."""
        append_durably(self.producer, events, self.stop_event.is_set)

    def _emit_locked(self, partition: int, events: list[Envelope]) -> bool:
        if not events:
            return False
        appended = append_durably(self.producer, events, self.stop_event.is_set)
        touched = {self._fold(e, a.offset) for e, a in zip(events, appended, strict=True)}
        self._persist(partition, touched, appended[-1].offset + 1)
        return True

    def settle(self, run_id: str, decide_events: Callable[[RunState], list[Envelope]]) -> bool:
        """Records computed from the run's current state, written as its partition's owner."""
        st = self.states.get(run_id)
        if st is None:
            return False
        partition = self.partition_of(run_id)

        def write() -> bool:
            current = self.states.get(run_id)
            return current is not None and self._emit_locked(partition, decide_events(current))

        return bool(self.ownership.write(partition, write))

    # -- the partition loop -----------------------------------------------------------------
    async def _consume(self, stream) -> None:
        """Each partition's commands in offset order from its cursor (``processors/cursor.py``): a
        record of a partition not owned now is left to the partition's next take-over, which
        catches up from the cursor (faust's commit only says where reading starts)."""
        async for record in stream.events():
            message = record.message
            source = Source(message.topic, message.partition, message.offset, message.key)
            try:
                await asyncio.to_thread(self.handle, source, message.value)
            except Exception:  # the loop never dies: the cursor stays, the next take-over reads it again
                LOG.exception("command at %s[%d]@%d not handled", source.topic, source.partition, source.offset)

    def handle(self, source: Source, value: bytes) -> None:
        """Handle a delivered command as its partition's owner, after the ones before it the cursor has
        not passed yet; nothing if the partition is not ours (its next owner catches up)."""
        self.ownership.write(source.partition, lambda: self.cursor.in_order(source, value, self._handle_one))

    def _handle_one(self, source: Source, value: bytes) -> None:
        """Decide a command and append its records (durably), then start its effects (the caller holds
        the partition's lock and owns it)."""
        try:
            command = self.codec.decode(value)
        except DecodeError:
            return  # the sandbox processor dead-letters what nobody can read (one copy is enough)
        if not command.type.startswith("run."):
            return
        partition = self.partition_of(command.stream_id)
        try:
            decision = decide(self.states.get(command.stream_id), command, ACTOR)
            self._emit_locked(partition, decision.events)
        except (ValueError, KeyError, TypeError) as e:
            LOG.exception("command %s on %s failed", command.type, command.stream_id)
            dead_letter(self.producer, source, value, f"{type(e).__name__}: {e}", f"processor-{NAME}")
            return
        self.dispatch(command.stream_id, decision.effects)

    def dispatch(self, run_id: str, effects: Iterable[RunEffect]) -> None:
        for effect in effects:
            st = self.states.get(run_id)
            if st is None or self.stop_event.is_set():
                return
            if effect.kind == "stop":
                sandbox_id = effect.sandbox_id or st.sandbox_id
                self.stop_sandbox(st, sandbox_id, effect.reason or "run over")
                self._stopped(st.run_id, [sandbox_id])
            else:
                self._start(st, effect.kind)

    def _start(self, st: RunState, kind: str) -> None:
        """A driver for the run's current attempt (``drive``) or its merge, unless one is running."""
        key = (st.run_id, st.attempt, kind)
        running = self.drivers.get(key)
        if running is not None and running.is_alive():
            return
        for done in [k for k, thread in self.drivers.items() if not thread.is_alive()]:
            del self.drivers[done]
        driver = Driver(self, st.run_id, st.attempt)
        target = driver.run if kind == "drive" else driver.merge
        thread = threading.Thread(target=target, name=f"run-{kind}-{st.run_id[-8:]}", daemon=True)
        self.drivers[key] = thread
        thread.start()

    def stop_sandbox(self, st: RunState, sandbox_id: str, reason: str) -> None:
        """Stop an attempt's sandbox (cancel, reject, rerun): the agent's command dies with it."""
        self.append(
            [
                Envelope(
                    type="sandbox.stop",
                    stream_id=st.run_id,
                    tenant_id=st.tenant_id,
                    actor=ACTOR,
                    sandbox_id=sandbox_id,
                    payload={"reason": reason},
                )
            ]
        )

    def _stopped(self, run_id: str, sandbox_ids: list[str]) -> None:
        """Remember (in the table) that these sandboxes' stops are appended: the next owner does not
        send them again. A crash before this only means they are sent twice (a no-op)."""
        if not sandbox_ids:
            return
        partition = self.partition_of(run_id)

        def mark() -> None:
            st = self.states.get(run_id)
            if st is None:
                return
            for sandbox_id in sandbox_ids:
                st = st.with_stopped(sandbox_id)
            self.states[run_id] = st
            self._persist(partition, [run_id], None)

        self.ownership.write(partition, mark)

    # -- ownership --------------------------------------------------------------------------
    async def _suspend(self, partitions: frozenset[int]) -> None:
        await asyncio.to_thread(self.ownership.suspend, partitions)
        await self.runtime.flush()

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
        for st in list(self.states.values()):  # resume what the previous owner left under way
            if self.partition_of(st.run_id) in new:
                # a previous owner killed between deciding an attempt is over (rerun, cancel, reject,
                # awaiting review) and stopping its sandbox left it running: stop those first
                over = st.sandboxes_to_stop()
                for sandbox_id in over:
                    self.stop_sandbox(st, sandbox_id, "run attempt over")
                self._stopped(st.run_id, over)
                if st.state in DRIVEN:
                    self._start(st, "drive")
                elif st.state == "approved":
                    self._start(st, "merge")
        self.catch_up.start(assigned)  # commands left unhandled, whatever the group committed (after the hook)

    def _forget(self, partition: int) -> None:
        self.cursor.forget(partition)
        for run_id in [r for r in self.states if self.partition_of(r) == partition]:
            del self.states[run_id]

    def _load(self, partition: int) -> None:
        """This partition's runs and cursor from the table, then the events written after its mark."""
        self.cursor.load(partition)
        for key, value in list(self.table.data.data.items()):
            if key.startswith("@") or not isinstance(value, dict):
                continue
            st = RunState.from_json(value)
            if self.partition_of(st.run_id) == partition:
                self.states[key] = st
        mark = self.table.data.data.get(f"@{partition}") or 0
        touched, end = set(), mark
        for msg in read_range(self.settings, self.settings.events_topic, partition, mark, None):
            end = msg.offset() + 1
            try:
                e = self.codec.decode(msg.value())
            except DecodeError:
                continue
            if e.stream_id in self.states or e.type == "run.accepted":
                touched.add(self._fold(e, msg.offset()))
        self._persist(partition, touched | self._expired(partition), end)

    def _expired(self, partition: int) -> set[str]:
        """Drop the partition's runs that ended more than ``ENDED_GRACE_S`` ago; their ids (for
        ``_persist`` to tombstone): memory and the changelog follow live runs, not history."""
        now = time.time() * 1_000_000
        gone = {
            run_id
            for run_id, st in list(self.states.items())
            if self.partition_of(run_id) == partition
            and st.state in ENDED
            and now - st.ended_at > ENDED_GRACE_S * 1_000_000
        }
        for run_id in gone:
            del self.states[run_id]
        return gone

    def sweep(self) -> None:
        """Forget the long-ended runs of every partition this instance owns (run every ``SWEEP_S``)."""
        for partition in {self.partition_of(run_id) for run_id in list(self.states)}:
            self.ownership.write(partition, lambda p=partition: self._persist(p, self._expired(p), None))

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until ``stop``: the faust app on its thread."""
        self.runtime.start()
        try:
            while not self.stop_event.wait(SWEEP_S):
                try:
                    self.sweep()
                except Exception:  # forgetting old runs can wait for the next sweep; serving cannot
                    LOG.exception("sweeping ended runs failed")
        finally:
            self.ownership.release_all()
            self.close()

    def close(self) -> None:
        """Release what construction took (``run`` ends with it; an orchestrator built and never run must
        be closed too: its loop and clients are the host process's fds)."""
        self.runtime.close()
        for thread in list(self.drivers.values()):
            thread.join(timeout=5)
        self.catch_up.wait(self.settings.kafka_timeout_s)
        with contextlib.suppress(Exception):
            self.producer.close()
        self.cursor.close()

    def stop(self) -> None:
        self.stop_event.set()
