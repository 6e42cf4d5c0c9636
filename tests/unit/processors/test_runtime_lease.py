"""The lease that fences a stalled processor instance (``processors/runtime.py``), with plain values."""

import time

from astraforge.processors.runtime import Lease


def test_a_lease_lasts_from_the_proofs_send_time_not_its_answer() -> None:
    lease = Lease(duration_s=8.0)
    assert not lease.valid() and lease.expires_at_ms() is None  # never proved: nothing may be written
    sent = time.monotonic() - 7.9  # a heartbeat sent 7.9 s ago, answered just now (the process stalled)
    lease.renew(sent, time.time() - 7.9)
    assert lease.valid()
    lease.renew(time.monotonic() - 9.0, time.time() - 9.0)  # an older proof answered late never shortens it
    assert lease.valid()
    time.sleep(0.2)
    assert not lease.valid()  # 8 s after the send: the coordinator may have moved the partitions


def test_the_lease_end_is_in_wall_clock_milliseconds() -> None:
    lease = Lease(duration_s=8.0)
    wall = time.time()
    lease.renew(time.monotonic(), wall)
    assert lease.expires_at_ms() == int((wall + 8.0) * 1000)
