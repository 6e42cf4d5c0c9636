"""Which source partitions one processor instance owns, and the lock under which it writes a stream.

A processor decides and writes a stream's records under its partition's lock, and only while it
owns the partition. During a rebalance a partition is first ``suspended`` (a write under way ends,
new ones wait), then either owned again or gone. Writers that come from other threads (a driver, an
effect) go through ``write``: it waits out a suspension and gives up once the partition is gone.

The sandbox processor keeps its own copy of this logic for now (``processors/sandboxes/processor.py``);
the run orchestrator uses this module.
"""

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
SUSPENDED_WAIT_S = 30.0


class Ownership:
    def __init__(self, suspended_wait_s: float = SUSPENDED_WAIT_S) -> None:
        self.status: dict[int, str] = {}  # partition -> owned | suspended
        self.locks: dict[int, threading.RLock] = defaultdict(threading.RLock)
        self.changed = threading.Condition()
        self.suspended_wait_s = suspended_wait_s

    def owns(self, partition: int) -> bool:
        return self.status.get(partition) == "owned"

    def owned_now(self, partition: int) -> bool:
        """Wait while a rebalance has the partition suspended; True if it is (still) ours."""
        deadline = time.monotonic() + self.suspended_wait_s
        with self.changed:
            while self.status.get(partition) == "suspended" and time.monotonic() < deadline:
                self.changed.wait(0.5)
            return self.status.get(partition) == "owned"

    def write(self, partition: int, work: Callable[[], T]) -> T | None:
        """``work()`` under the partition's lock while we own it; None if the partition is gone."""
        while self.owned_now(partition):
            with self.locks[partition]:
                if self.status.get(partition) == "owned":
                    return work()
        return None

    def suspend(self, partitions: Iterable[int]) -> None:
        """A rebalance began: writes to these partitions wait (one under way finishes first)."""
        for p in partitions:
            with self.locks[p], self.changed:
                if self.status.get(p) == "owned":
                    self.status[p] = "suspended"

    def changes(self, assigned: Iterable[int]) -> tuple[set[int], set[int]]:
        """(new, lost): partitions assigned now and not held before, held before and not now."""
        held, assigned = set(self.status), set(assigned)
        return assigned - held, held - assigned

    def drop(self, partition: int, forget: Callable[[], None] = lambda: None) -> None:
        """The partition is gone: ``forget`` its state under its lock."""
        with self.locks[partition], self.changed:
            self.status.pop(partition, None)
            forget()
            self.changed.notify_all()

    def own(self, partitions: Iterable[int]) -> None:
        with self.changed:
            for p in partitions:
                self.status[p] = "owned"
            self.changed.notify_all()

    def release_all(self) -> None:
        """Stopping: nothing is written from here on (the next owner closes what runs)."""
        for p in list(self.status):
            self.drop(p)
