"""What a new owner of a partition keeps from the runs table: live runs and runs ended within the
grace period, not every run the partition ever had (start-up cost follows live state, not history)."""

import time
from dataclasses import replace

from astraforge.kafka import read_range
from astraforge.processors.runs.orchestrator import ENDED_GRACE_S, RunOrchestrator
from astraforge.processors.runs.state import RunState, attempt_sandbox_id

REQUEST = {"repo_url": "/r.git", "agent": "script"}


def test_a_new_owner_drops_runs_from_the_table_that_ended_long_ago(fresh_settings, tmp_path) -> None:
    """``_load`` used to drop long-ended runs only among those the events after the table's mark
    touched: a run that ended before the mark stayed in memory and in the changelog for ever,
    reloaded by every owner after every restart and rebalance."""
    o = RunOrchestrator(fresh_settings, work_dir=tmp_path)
    partition = o.partition_of("run-old")
    same = [f"run-{i}" for i in range(200) if o.partition_of(f"run-{i}") == partition][:2]
    now = time.time_ns() // 1000
    old = RunState("run-old", "t", REQUEST, state="merged", ended_at=now - (ENDED_GRACE_S + 60) * 1_000_000)
    recent = replace(old, run_id=same[0], ended_at=now - 60 * 1_000_000)
    live = replace(old, run_id=same[1], state="running", ended_at=0)
    for st in (old, recent, live):
        o.table.data.data[st.run_id] = st.to_json()
    o.table.data.data[f"@{partition}"] = 0  # the (empty) events topic was folded up to its start
    try:
        o._load(partition)
    finally:
        o.close()
    assert set(o.states) == {recent.run_id, live.run_id}


def test_an_owner_forgets_runs_that_ended_long_ago_while_it_keeps_the_partition(fresh_settings, tmp_path) -> None:
    """Ended runs were dropped only when a partition was loaded: an instance that kept its
    partitions for weeks held every run it had ever driven, in memory and in the changelog."""
    o = RunOrchestrator(fresh_settings, work_dir=tmp_path)
    try:
        partition = o.partition_of("run-old")
        o.ownership.own({partition})
        now = time.time_ns() // 1000
        old = RunState("run-old", "t", REQUEST, state="rejected", ended_at=now - (ENDED_GRACE_S + 60) * 1_000_000)
        o.states = {"run-old": old, "run-live": replace(old, run_id="run-live", state="awaiting_review", ended_at=0)}
        o.sweep()
        assert set(o.states) == {"run-live"}
    finally:
        o.close()


def test_a_new_owner_stops_the_sandbox_of_a_run_that_is_past_its_agent(fresh_settings, tmp_path) -> None:
    """kill -9 between ``run.cancelled`` (or ``run.awaiting_review``) and the ``sandbox.stop`` that
    follows it left the attempt's sandbox (and its agent's command) running until its TTL: the
    next owner resumed only runs under way. It stops them (a stop of a stopped sandbox does nothing)."""
    o = RunOrchestrator(fresh_settings, work_dir=tmp_path)
    partition = o.partition_of("run-cancelled")
    same = [f"run-{i}" for i in range(200) if o.partition_of(f"run-{i}") == partition][:1]
    now = time.time_ns() // 1000
    cancelled = RunState("run-cancelled", "t", REQUEST, state="cancelled", ended_at=now)
    waiting = replace(cancelled, run_id=same[0], state="awaiting_review", ended_at=0)
    for st in (cancelled, waiting):
        o.table.data.data[st.run_id] = st.to_json()
    o.table.data.data[f"@{partition}"] = 0
    try:
        o._take_over(frozenset({partition}))
    finally:
        o.catch_up.wait(60)  # the take-over's catch-up (on a thread of its own) reads the commands topic
        o.close()
    commands = read_range(fresh_settings, fresh_settings.commands_topic, partition, 0, None)
    stops = [(e.type, e.sandbox_id) for e in (o.codec.decode(m.value()) for m in commands)]
    assert sorted(stops) == sorted([("sandbox.stop", cancelled.sandbox_id), ("sandbox.stop", waiting.sandbox_id)])


def test_a_new_owner_stops_earlier_attempts_sandboxes_once(fresh_settings, tmp_path) -> None:
    """kill -9 between a rerun's records (attempt 2 requested) and the ``sandbox.stop`` of attempt 1
    left attempt 1's sandbox running until its TTL: the next owner only drove attempt 2. It stops
    every earlier attempt's sandbox, and remembers that it did: the owner after it sends none again."""
    o = RunOrchestrator(fresh_settings, work_dir=tmp_path)
    partition = o.partition_of("run-rerun")
    rerun = RunState("run-rerun", "t", REQUEST, state="requested", attempt=3, stopped_through=1)
    o.table.data.data[rerun.run_id] = rerun.to_json()
    o.table.data.data[f"@{partition}"] = 0
    o.stop_event.set()  # the resumed attempt's driver stops at once: this test is about the stops
    try:
        o._take_over(frozenset({partition}))
        for thread in list(o.drivers.values()):
            thread.join(timeout=30)
    finally:
        o.close()
    assert o.states[rerun.run_id].stopped_through == 2
    second = RunOrchestrator(fresh_settings, work_dir=tmp_path)  # the next owner, from the changelog's view
    second.table.data.data.update({rerun.run_id: o.states[rerun.run_id].to_json(), f"@{partition}": 0})
    second.stop_event.set()
    try:
        second._take_over(frozenset({partition}))
        for thread in list(second.drivers.values()):
            thread.join(timeout=30)
    finally:
        second.close()
    commands = read_range(fresh_settings, fresh_settings.commands_topic, partition, 0, None)
    stops = [e.sandbox_id for e in (o.codec.decode(m.value()) for m in commands) if e.type == "sandbox.stop"]
    assert stops == [attempt_sandbox_id(rerun.run_id, 2)]  # not attempt 1 (stopped before), not the current one
