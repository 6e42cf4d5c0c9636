"""A take-over's catch-up: the commands left before it, handled on a thread after the rebalance hook.

When partitions are assigned, the commands between each one's cursor and its end (left unhandled by
the previous owner, or by this instance during the rebalance, whatever faust committed) must be
handled before any newer record of that partition, each once. Done inside faust's on-assigned hook,
a backlog of N commands cost N durable appends before faust resumed consuming any partition, and a
long hook risks the group session. So the hook only starts a ``CatchUp``.

Order and once-only come from the cursor, not from timing: every record is handled under its
partition's lock through ``CommandCursor``, which skips what lies below its position and, for a
record faust delivers meanwhile, first handles the records before it (``in_order``). The catch-up
holds the lock for one batch at a time, so a delivered record waits for a batch, not the whole
backlog. It ends for a partition at the partition's end, once the partition is not writable
(suspended, gone, the lease lapsed), once a revocation began since the catch-up started (a
revocation counts itself before it waits for the lock, and Python's locks are not fair: without
the count the catch-up could take the lock back batch after batch), or once the partition was
dropped since (its epoch moved). What is left stays at the cursor: the next take-over, which runs
a catch-up of its own, or the next delivered record goes on from there.
"""

import logging
import threading
from collections.abc import Iterable

from astraforge.processors.cursor import CommandCursor, Handler
from astraforge.processors.ownership import Ownership

LOG = logging.getLogger(__name__)
BATCH = 64  # records handled per hold of the partition's lock
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 5.0  # backoff after a failed batch (Kafka or the network away)


class CatchUp:
    """Runs take-overs' catch-ups for one processor instance, each on a thread of its own."""

    def __init__(
        self, name: str, ownership: Ownership, cursor: CommandCursor, handle: Handler, stop: threading.Event
    ) -> None:
        self.name = name
        self.ownership = ownership
        self.cursor = cursor
        self.handle = handle
        self.stop = stop
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, partitions: Iterable[int]) -> threading.Thread:
        """Catch ``partitions`` up on a new thread (called by the on-assigned hook, after recovery)."""
        epochs = {p: self.ownership.epoch(p) for p in sorted(partitions)}
        revocations = self.ownership.revocations
        thread = threading.Thread(
            target=self._run, args=(epochs, revocations), name=f"{self.name}-catch-up", daemon=True
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def wait(self, timeout: float) -> bool:
        """Wait for every catch-up started so far to end; True if they all did within ``timeout``."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in threads)

    def _run(self, epochs: dict[int, int], revocations: int) -> None:
        for partition, epoch in epochs.items():
            handled = self.partition(partition, epoch, revocations)
            if handled:
                LOG.info("%s[%d]: %d commands left before the take-over handled", self.name, partition, handled)

    def partition(self, partition: int, epoch: int, revocations: int) -> int:
        """Handle the partition's commands from its cursor to its end, a batch per hold of its lock,
        retrying a failed batch while the partition stays ours and no revocation began since the
        count ``revocations``. Returns how many were handled."""
        handled, delay, owner = 0, RETRY_FIRST_S, self.ownership
        while not self.stop.is_set():
            with owner.locks[partition]:
                revoked = owner.revocations != revocations or owner.epoch(partition) != epoch
                if revoked or not owner.may_write(partition):
                    return handled
                try:
                    n = self.cursor.catch_up(partition, self.handle, limit=BATCH)
                except Exception:
                    LOG.exception("%s: catching up partition %d failed; retrying", self.name, partition)
                else:
                    handled, delay = handled + n, RETRY_FIRST_S
                    if n < BATCH:
                        return handled
                    continue
            self.stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        return handled
