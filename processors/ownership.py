"""Which source partitions one processor instance owns, and the locks under which it writes a stream.

A processor decides and writes a stream's records under its partition's lock, and only while it
owns the partition within its lease (``runtime.Lease``; a processor without fencing passes none).
During a rebalance a partition is first ``suspended`` (a write under way ends, new ones wait), then
either owned again or gone. Writers that come from other threads (a driver, an effect) go through
``write`` (or ``owned_now``): it waits out a suspension, or a lapsed lease while the group decides,
and gives up once the partition is gone. A take-over that loads partitions marks them owned only
if no revocation began meanwhile (``own`` with the count it started from): a stale one owns nothing.

Two more pieces serve writers that outlive one write (a command running for minutes, recording its
output as it comes): ``output_locks``, a second lock per partition for records queued without the
partition's lock (a suspension and a drop wait for one being queued, so none is queued after them),
and ``epoch``, which counts each partition's drops: work that noted the epoch when it began knows
the partition was given away since, even if it came back (a take-over after a missed generation).

Used by the sandbox processor, the run orchestrator and the conversation runtime.
"""

import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
V = TypeVar("V")
SUSPENDED_WAIT_S = 30.0


class PerPartition(dict[int, V]):
    """A value per partition, made on first use: threads that ask at once all get the one stored
    (``setdefault`` is atomic; a ``defaultdict`` whose factory runs Python code may hand two
    threads two different locks for one partition)."""

    def __init__(self, factory: Callable[[], V]) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, partition: int) -> V:
        return self.setdefault(partition, self.factory())


class Ownership:
    def __init__(self, suspended_wait_s: float = SUSPENDED_WAIT_S, lease: Callable[[], bool] = lambda: True) -> None:
        self.status: dict[int, str] = {}  # partition -> owned | suspended
        self.locks: PerPartition[threading.RLock] = PerPartition(threading.RLock)
        self.output_locks: PerPartition[threading.Lock] = PerPartition(threading.Lock)
        self.epochs: PerPartition[int] = PerPartition(int)  # partition -> how often it was dropped
        self.changed = threading.Condition()
        self.suspended_wait_s = suspended_wait_s
        self.lease = lease  # True while this instance provably is in its group's current generation
        self.revocations = 0  # revocations so far: a take-over that saw another one begin is stale

    def owns(self, partition: int) -> bool:
        return self.status.get(partition) == "owned"

    def may_write(self, partition: int) -> bool:
        """Owned (assigned, loaded, not suspended) and within the lease: the fence."""
        return self.owns(partition) and self.lease()

    def held(self, partition: int) -> bool:
        """Owned or suspended by a rebalance under way (not yet given away)."""
        return self.status.get(partition) in ("owned", "suspended")

    def epoch(self, partition: int) -> int:
        """How often the partition was dropped so far: a change since some work began means it was given
        away meanwhile (even if it is held again now)."""
        return self.epochs[partition]

    def owned_now(self, partition: int) -> bool:
        """Wait while a rebalance has the partition suspended, or while it is owned but the lease has
        lapsed (a stalled process: its group decides whether it still owns it); True if it is ours."""
        deadline = time.monotonic() + self.suspended_wait_s
        with self.changed:
            while time.monotonic() < deadline and (
                self.status.get(partition) == "suspended" or (self.owns(partition) and not self.lease())
            ):
                self.changed.wait(0.1)
            return self.may_write(partition)

    def write(self, partition: int, work: Callable[[], T]) -> T | None:
        """``work()`` under the partition's lock while we own it; None if the partition is gone."""
        while self.owned_now(partition):
            with self.locks[partition]:
                if self.may_write(partition):
                    return work()
        return None

    def suspend(self, partitions: Iterable[int]) -> None:
        """A rebalance began: writes to these partitions wait (one under way, or an output record being
        queued, finishes first), and a take-over begun before it is stale."""
        with self.changed:
            self.revocations += 1
        for p in partitions:
            with self.locks[p], self.output_locks[p], self.changed:
                if self.status.get(p) == "owned":
                    self.status[p] = "suspended"

    def changes(self, assigned: Iterable[int], continued: bool = True) -> tuple[set[int], set[int]]:
        """(new, lost): partitions assigned now and not held before, held before and not now. Unless the
        assignment came straight after the one before (``continued``: the instance missed no
        generation of its group), nothing held counts as kept: all is lost, and all assigned is new."""
        held, assigned = set(self.status) if continued else set(), set(assigned)
        return assigned - held, set(self.status) - (assigned & held)

    def drop(self, partition: int, forget: Callable[[], None] = lambda: None) -> None:
        """The partition is gone: ``forget`` its state under its locks; its epoch moves on."""
        with self.locks[partition], self.output_locks[partition], self.changed:
            self.status.pop(partition, None)
            self.epochs[partition] += 1
            forget()
            self.changed.notify_all()

    def own(self, partitions: Iterable[int], revocations: int | None = None) -> bool:
        """Mark ``partitions`` owned, unless a revocation began since the take-over that loaded them
        counted ``revocations``: then nothing is marked and False says the take-over is stale."""
        with self.changed:
            self.changed.notify_all()
            if revocations is not None and revocations != self.revocations:
                return False
            for p in partitions:
                self.status[p] = "owned"
            return True

    def release_all(self) -> None:
        """Stopping: nothing is written from here on (the next owner closes what runs)."""
        for p in list(self.status):
            self.drop(p)
