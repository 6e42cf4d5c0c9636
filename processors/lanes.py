"""Per-tenant lanes in front of the sandbox processor's worker pool.

Every effect runs in one shared pool of threads, and an effect holds its thread until its sandbox
answers, which the agent in the sandbox can put off (a snapshot's tar runs as the agent, which can
stop it; a file transfer crawls in a sandbox whose CPU the agent keeps busy). Commands are bounded
per tenant by the concurrent-exec quota; the effects no quota counts (file reads and writes,
snapshots) go through a lane: at most ``share`` of one tenant's run at once, and the rest wait in
that tenant's queue, not in a thread. So one tenant cannot hold more than its quota plus its share
of the pool, whatever it sends.

Not protected: several tenants together can still fill the pool (size it for the tenants' quotas);
within a lane a stuck effect delays its own tenant's next ones.
"""

import logging
import queue
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Executor

LOG = logging.getLogger(__name__)


class TenantLanes:
    def __init__(self, pool: Executor, share: int) -> None:
        self.pool = pool
        self.share = max(1, share)
        self._lock = threading.Lock()
        self._running: defaultdict[str, int] = defaultdict(int)
        self._waiting: defaultdict[str, deque] = defaultdict(deque)

    def submit(self, tenant: str, fn: Callable[..., None], *args) -> None:
        """Run ``fn(*args)`` in the pool now if the tenant is within its share, else once one of
        its running effects ends."""
        with self._lock:
            if self._running[tenant] >= self.share:
                self._waiting[tenant].append((fn, args))
                return
            self._running[tenant] += 1
        self.pool.submit(self._run, tenant, fn, args)

    def _run(self, tenant: str, fn: Callable[..., None], args: tuple) -> None:
        try:
            fn(*args)
        finally:
            with self._lock:
                queue = self._waiting.get(tenant)
                following = queue.popleft() if queue else None
                if queue is not None and not queue:
                    del self._waiting[tenant]
                if following is None:
                    self._running[tenant] -= 1
                    if not self._running[tenant]:
                        del self._running[tenant]
            if following is not None:
                self.pool.submit(self._run, tenant, *following)


class CommandThreads:
    """A thread of its own for every running command, reused by the next one.

    Starting a thread waits until it runs, which on a busy host cost more than the rest of a
    command's hand-over; an idle thread is handed the next command instead. Threads are daemons,
    as a thread per command was: a stopping processor does not wait for its long commands (the
    next owner closes them). Unbounded: the tenants' exec quotas bound how many run at once. At
    most ``keep_idle`` threads wait for a command; past that a thread ends with its command (a
    burst of long commands does not leave its threads behind for the process's life).
    """

    def __init__(self, name: str, keep_idle: int = 16) -> None:
        self.name = name
        self.keep_idle = keep_idle
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue] = []
        self._count = 0

    @property
    def idle(self) -> int:
        """Threads waiting for a command."""
        return len(self._idle)

    def submit(self, fn: Callable[..., None], *args) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self._count += 1
                number = self._count
        if inbox is not None:
            inbox.put((fn, args))
            return
        inbox = queue.SimpleQueue()
        inbox.put((fn, args))
        threading.Thread(target=self._serve, args=(inbox,), name=f"{self.name}-{number}", daemon=True).start()

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            fn, args = inbox.get()
            try:
                fn(*args)
            except Exception:  # the callers log their own failures; a thread must survive anything else
                LOG.exception("%s: command failed", self.name)
            with self._lock:
                if len(self._idle) >= self.keep_idle:
                    return
                self._idle.append(inbox)


class Gate:
    """Holds work back until the records that allow it are acknowledged (``open``), or drops it when
    they were not (``cancel``). Work handed to its thread before the append waits here, so the hop to
    that thread (and what the work reads before it acts) overlaps the broker's round trip."""

    def __init__(self) -> None:
        self._decided = threading.Event()
        self._opened = False

    def open(self) -> None:
        self._opened = True
        self._decided.set()

    def cancel(self) -> None:
        self._decided.set()

    def wait(self) -> bool:
        """Block until opened (True) or cancelled (False)."""
        self._decided.wait()
        return self._opened
