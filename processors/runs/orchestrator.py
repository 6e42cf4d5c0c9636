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

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from astraforge.artifacts import ArtifactStore, make_artifact_store
from astraforge.config import Settings
from astraforge.processors.base import PartitionedProcessor
from astraforge.processors.runs.driver import ACTOR, Driver
from astraforge.processors.runs.state import DRIVEN, ENDED, RunDecision, RunEffect, RunState, decide, evolve
from astraforge.processors.runs.vcs import make_provider
from astraforge.schemas import Envelope

LOG = logging.getLogger(__name__)
NAME = "runs"
ENDED_GRACE_S = 3600  # an ended run stays in the table this long (a late command finds it ended)
SWEEP_S = 300.0  # how often an owner forgets the runs that ended more than ENDED_GRACE_S ago


class RunOrchestrator(PartitionedProcessor):
    name = NAME

    def __init__(
        self, settings: Settings, artifacts: ArtifactStore | None = None, work_dir: Path | None = None
    ) -> None:
        super().__init__(settings)
        self.artifacts = artifacts or make_artifact_store(settings)
        token = settings.vcs_token.get_secret_value() if settings.vcs_token else None
        self.vcs = make_provider(settings.vcs_provider, settings.vcs_api_url, token)
        self.work_dir = work_dir or settings.state_dir / "runs"
        self.states: dict[str, RunState] = {}
        self.drivers: dict[tuple[str, int, str], threading.Thread] = {}

    # -- state ------------------------------------------------------------------------------
    def _fold(self, e: Envelope, offset: int) -> str:
        new = evolve(self.states.get(e.stream_id), e)
        if new is not None:
            if e.type == "run.accepted" and not new.events_from:
                new = replace(new, events_from=offset)
            self.states[e.stream_id] = new
        return e.stream_id

    # -- the partition loop -----------------------------------------------------------------
    def _takes(self, command: Envelope) -> bool:
        return command.type.startswith("run.")

    def _decide(self, command: Envelope) -> RunDecision:
        return decide(self.states.get(command.stream_id), command, ACTOR)

    def _act(self, command: Envelope, decision: RunDecision) -> None:
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
    def _resume(self, partitions: set[int]) -> None:
        for st in list(self.states.values()):  # resume what the previous owner left under way
            if self.partition_of(st.run_id) in partitions:
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

    def _load(self, partition: int) -> None:
        """This partition's runs and cursor from the table, then the events written after its mark."""
        self.cursor.load(partition)
        for key, value in self.stored():
            st = RunState.from_json(value)
            if self.partition_of(st.run_id) == partition:
                self.states[key] = st
        touched, end, _ = self.fold_after_mark(
            partition, lambda e: e.stream_id in self.states or e.type == "run.accepted"
        )
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

    def _wait_work(self) -> None:
        for thread in list(self.drivers.values()):
            thread.join(timeout=5)
