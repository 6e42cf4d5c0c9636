"""Heartbeats coalesced per sandbox: a client looping on ``heartbeat`` should not turn every call into a
Kafka record. The idle deadline moves in whole seconds anyway, so one recorded heartbeat per sandbox per
window extends it exactly as a thousand would; later calls in the window answer 202 with nothing to add."""

import time

WINDOW_S = 1.0
MAX_TRACKED = 100_000  # sandboxes remembered at once; past it the oldest are forgotten (they beat again)


class HeartbeatCoalescer:
    """When each sandbox's last heartbeat was recorded by this API process."""

    def __init__(self, window_s: float = WINDOW_S, clock=time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.recorded: dict[str, float] = {}

    def due(self, sandbox_id: str) -> bool:
        """True when a heartbeat for ``sandbox_id`` should be recorded now (and notes that it was)."""
        now = self.clock()
        last = self.recorded.get(sandbox_id)
        if last is not None and now - last < self.window_s:
            return False
        self.recorded.pop(sandbox_id, None)  # re-inserted last: dict order is oldest-first
        self.recorded[sandbox_id] = now
        while len(self.recorded) > MAX_TRACKED:
            del self.recorded[next(iter(self.recorded))]
        return True
