"""Partition ownership with plain threads: writes happen only while the partition is owned."""

import threading

from astraforge.processors.ownership import Ownership


def test_a_write_waits_out_a_suspension_and_gives_up_once_the_partition_is_gone() -> None:
    o = Ownership(suspended_wait_s=5)
    o.own([0, 1])
    assert o.write(0, lambda: "done") == "done"
    o.suspend([0])
    result = []
    writer = threading.Thread(target=lambda: result.append(o.write(0, lambda: "late")))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive()  # waiting: the rebalance may give the partition back
    new, lost = o.changes([1])
    assert (new, lost) == (set(), {0})
    forgotten = []
    o.drop(0, lambda: forgotten.append(0))
    writer.join(5)
    assert result == [None] and forgotten == [0] and not o.owns(0) and o.owns(1)


def test_a_suspended_partition_given_back_is_written_again() -> None:
    o = Ownership(suspended_wait_s=5)
    o.own([2])
    o.suspend([2])
    result = []
    writer = threading.Thread(target=lambda: result.append(o.write(2, lambda: "written")))
    writer.start()
    assert o.changes([2, 3]) == ({3}, set())
    o.own([2, 3])
    writer.join(5)
    assert result == ["written"]
    o.release_all()
    assert o.write(3, lambda: "never") is None


def test_without_the_lease_nothing_is_written_and_a_stale_take_over_owns_nothing() -> None:
    """The fence and the stale take-over, shared by both processors: an owned partition is not written
    while the lease has lapsed, and a take-over overtaken by a revocation marks nothing owned."""
    lease = {"valid": True}
    o = Ownership(suspended_wait_s=0.3, lease=lambda: lease["valid"])
    began = o.revocations
    o.suspend([])  # a revocation begins while the take-over loads
    assert not o.own([0], began) and not o.owns(0)
    assert o.own([0], o.revocations) and o.may_write(0)
    lease["valid"] = False  # stalled past the session: the group decides who owns it now
    assert o.write(0, lambda: "late") is None and o.held(0) and not o.may_write(0)
