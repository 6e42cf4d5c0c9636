"""Partition ownership with plain threads: writes happen only while the partition is owned."""

import threading

from astraforge.processors.ownership import Ownership, PerPartition


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


def test_a_suspension_waits_for_an_output_record_being_queued_and_a_drop_moves_the_epoch() -> None:
    """What the sandbox processor's hand-over needs: a record queued under the output lock lands before
    the suspension (so the next owner counts it), and a command that noted the epoch learns the
    partition was given away even once it is owned again."""
    o = Ownership(suspended_wait_s=5)
    o.own([0])
    began = o.epoch(0)
    queued, suspended = threading.Event(), threading.Event()
    with o.output_locks[0]:
        suspender = threading.Thread(target=lambda: (o.suspend([0]), suspended.set()))
        suspender.start()
        assert not suspended.wait(0.2) and o.owns(0)  # the record being queued goes first
        queued.set()
    suspender.join(5)
    assert queued.is_set() and suspended.is_set() and o.held(0) and not o.owns(0)
    o.drop(0)
    o.own([0])
    assert o.owns(0) and o.epoch(0) == began + 1


def test_after_a_missed_generation_every_partition_held_is_lost_and_every_one_assigned_is_new() -> None:
    o = Ownership()
    o.own([0, 1])
    assert o.changes([1, 2]) == ({2}, {0})
    assert o.changes([1, 2], continued=False) == ({1, 2}, {0, 1})


def test_threads_asking_for_a_partitions_lock_at_once_get_the_same_one() -> None:
    """Two threads both inside the factory at once (forced by a barrier): a ``defaultdict`` stores
    the second lock over the first and each thread holds its own; ``PerPartition`` hands both the one
    stored."""
    both_inside = threading.Barrier(2, timeout=5)

    def new_lock() -> threading.Lock:
        both_inside.wait()
        return threading.Lock()

    locks = PerPartition(new_lock)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(locks[7])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(got) == 2 and got[0] is got[1] is locks[7]
