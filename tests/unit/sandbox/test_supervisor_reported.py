"""The supervisor's reported detached processes: each reported once, in memory bounded for a sandbox's life.

``ReportedProcesses`` is plain data in the supervisor's module (stdlib only), fed what ``_process``
reads from /proc; a survivor recorded once, with its command, over the real socket is
tests/security/test_control_channel.py (test_a_detached_survivor_is_recorded_...)."""

import sys

from astraforge.sandbox.supervisor import ReportedProcesses


def proc(pid: int, start: int, session: int | None = None) -> dict:
    """A live agent process as ``_process`` reads it (a detached one has a session of its own)."""
    return {"pid": pid, "start": str(start), "session": pid if session is None else session, "argv": ["sleep"]}


def test_100k_processes_that_came_and_went_leave_memory_bounded_and_a_survivor_is_reported_once() -> None:
    reported = ReportedProcesses()
    survivor = proc(7, 1)
    assert reported.new([survivor], set()) == [survivor]
    for look in range(10_000):  # a command ends per look, each leaving 10 processes that die before the next
        born = [proc(100 + (look * 10 + i) % 30_000, look) for i in range(10)]  # pids wrap: reused, new start
        assert reported.new([survivor, *born], set()) == born
    held = sys.getsizeof(reported.seen) + sum(map(sys.getsizeof, reported.seen))
    assert len(reported.seen) == 11 and held < 64 * 1024, f"{len(reported.seen)} kept, {held} bytes"
    assert reported.new([survivor], set()) == [], "a live process was reported again"
    assert len(reported.seen) == 1


def test_a_process_is_reported_once_its_session_ends_and_a_reused_pid_again() -> None:
    reported = ReportedProcesses()
    child = proc(20, 5, session=10)  # in the session of command 10, still running
    assert reported.new([child], {10}) == []
    assert reported.new([child], set()) == [child]  # command 10 ended: left behind
    assert reported.new([child], set()) == []
    reused = proc(20, 9)  # the pid again, a later start: another process
    assert reported.new([reused], set()) == [reused]
