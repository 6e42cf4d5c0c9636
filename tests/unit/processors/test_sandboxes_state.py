from dataclasses import replace

from astraforge.processors.sandboxes.state import (
    SandboxState,
    decide,
    evolve,
    finished,
    finished_payload,
    reap,
    recover,
    requested_state,
    started,
)
from astraforge.schemas import Envelope, default_codec
from astraforge.schemas.sandbox_spec import RequestedSandbox

SID = "sb-" + "a" * 32


def command(type_: str, payload: dict, at: int = 1_000_000) -> Envelope:
    return Envelope(
        type=type_, stream_id=SID, tenant_id="acme", actor="u", sandbox_id=SID, payload=payload, occurred_at=at
    )


CREATE = command("sandbox.create", RequestedSandbox("img", {"memory_mb": 256}, 10, 100).create_payload())
V6_CREATE = command(
    "sandbox.create",
    {
        "image": "img",
        "profile": {"memory_mb": "256"},
        "cpus": None,
        "memory_mb": None,
        "pids": None,
        "idle_timeout_s": 10,
        "ttl_s": 100,
        "egress_allow": [],
        "restore_snapshot": None,
    },
)
EXEC = command(
    "sandbox.exec",
    {"command_id": "c1", "argv": ["true"], "shell": None, "cwd": None, "env": {}, "timeout_s": 10.0, "async_": False},
)


def fold(state: SandboxState | None, events: list[Envelope]) -> SandboxState | None:
    for e in events:
        state = evolve(state, e)
    return state


def ready() -> SandboxState:
    state = fold(None, decide(None, CREATE, 0, "p").events)
    return replace(state, state="ready", last_activity=CREATE.occurred_at)


def test_create_writes_requested_and_provisions_once() -> None:
    decision = decide(None, CREATE, 0, "p")
    assert [e.type for e in decision.events] == ["sandbox.requested", "sandbox.provisioning"]
    assert [e.kind for e in decision.effects] == ["provision"]
    state = fold(None, decision.events)
    assert state.state == "provisioning" and state.profile == {"memory_mb": 256}
    assert state.idle_timeout_s == 10 and state.ttl_s == 100 and state.image == "img"
    assert decide(state, CREATE, 0, "p").events == []  # redelivered create: nothing twice
    ended = replace(state, state="terminated")
    assert decide(ended, CREATE, 0, "p").events == []  # a create for a sandbox that already ended


def test_exec_is_accepted_once_then_runs_and_settles_busy_and_ready() -> None:
    state = ready()
    decision = decide(state, EXEC, 42, "p")
    (accepted,) = decision.events
    assert accepted.type == "exec.accepted" and accepted.payload["command_offset"] == 42
    assert [e.kind for e in decision.effects] == ["exec"]
    state = fold(state, decision.events)
    assert decide(state, EXEC, 42, "p").events == []  # redelivered: never accepted (or run) twice
    begin = started(state, "c1", ["true"], None, "p", EXEC)
    assert [e.type for e in begin] == ["exec.started", "sandbox.busy"]
    state = fold(state, begin)
    assert state.state == "busy" and state.running == {"c1"}
    end = finished(state, finished_payload("c1", 0, 1.0), "p", EXEC)
    assert [e.type for e in end] == ["exec.finished", "sandbox.ready"]
    state = fold(state, end)
    assert state.state == "ready" and not state.pending and not state.running
    assert finished(state, finished_payload("c1", 0, 1.0), "p", EXEC) == []  # closed already: nothing twice
    assert decide(state, EXEC, 42, "p").events == []  # finished recently: still a redelivery


def test_recover_closes_started_commands_and_runs_accepted_ones() -> None:
    state = ready()
    other = command("sandbox.exec", {**EXEC.payload, "command_id": "c2"})
    state = fold(state, decide(state, EXEC, 1, "p").events + decide(state, other, 2, "p").events)
    state = fold(state, started(state, "c1", ["true"], None, "p", EXEC))
    decision = recover(state, True, "p", "moved")
    types = [(e.type, e.payload.get("command_id")) for e in decision.events]
    assert types == [("exec.finished", "c1"), ("sandbox.ready", None)]
    assert decision.events[0].payload["error"] == "interrupted: moved"
    assert [(e.kind, e.reason or (e.pending and e.pending.command_id)) for e in decision.effects] == [
        ("egress", None),
        ("cancel", "c1"),
        ("resume", "c2"),
    ]
    state = fold(state, decision.events)
    assert [p.command_id for p in state.pending] == ["c2"] and state.state == "ready"
    assert recover(replace(state, state="ready"), False, "p", "x").events[-1].type == "sandbox.failed"


def test_a_new_owner_re_attaches_to_a_started_command_whose_output_start_is_known() -> None:
    state = ready()
    state = fold(state, decide(state, EXEC, 1, "p").events)
    for e in started(state, "c1", ["true"], None, "p", EXEC):
        state = evolve(state, e, offset=40)  # exec.started at offset 40 of the events topic, then busy
    assert state.started_offsets == {"c1": 40} and state.state == "busy"
    assert SandboxState.from_json(state.to_json()) == state
    decision = recover(state, True, "p", "moved")
    assert decision.events == []  # nothing closed, still busy: the command goes on
    assert [(e.kind, e.pending and e.pending.command_id) for e in decision.effects] == [
        ("egress", None),
        ("reattach", "c1"),
    ]
    # a sandbox that vanished, or is stopping, has no command to re-attach to: closed as before
    assert recover(state, False, "p", "moved").events[0].payload["error"] == "interrupted: moved"
    stopping = recover(replace(state, state="stopping"), True, "p", "moved")
    assert stopping.events[0].payload["error"] == "interrupted: moved"
    done = fold(state, finished(state, finished_payload("c1", 0, 1.0), "p", EXEC))
    assert done.started_offsets == {} and done.state == "ready"
    older = {k: v for k, v in state.to_json().items() if k != "started_offsets"}  # a table value of a release before
    assert SandboxState.from_json(older).started_offsets == {}


def test_recover_leaves_the_commands_this_instance_still_runs_running() -> None:
    """A take-over that reloads a partition this instance held (a generation passed without it) finds
    its own running command still open: nobody closed it, so it goes on (no close, no cancel, the
    sandbox stays busy); a command nobody here runs is closed as before."""
    state = ready()
    other = command("sandbox.exec", {**EXEC.payload, "command_id": "c2"})
    state = fold(state, decide(state, EXEC, 1, "p").events + decide(state, other, 2, "p").events)
    state = fold(state, started(state, "c1", ["true"], None, "p", EXEC))
    state = fold(state, started(state, "c2", ["true"], None, "p", other))
    decision = recover(state, True, "p", "moved", running_here=frozenset({"c1"}))
    assert [(e.type, e.payload.get("command_id")) for e in decision.events] == [("exec.finished", "c2")]
    assert [(e.kind, e.reason) for e in decision.effects] == [("egress", None), ("cancel", "c2")]
    assert fold(state, decision.events).state == "busy"


def test_state_survives_the_table_json() -> None:
    state = fold(ready(), decide(ready(), EXEC, 7, "p").events)
    assert SandboxState.from_json(state.to_json()) == state


def test_stop_and_commands_after_the_end() -> None:
    state = ready()
    stop = decide(state, command("sandbox.stop", {"reason": None}), 0, "p")
    assert [e.type for e in stop.events] == ["sandbox.stopping"] and stop.effects[0].reason == "stop"
    done = replace(stop.events[0], type="sandbox.terminated", payload={**stop.events[0].payload, "state": "terminated"})
    ended = fold(state, [*stop.events, done])
    assert ended.state == "terminated" and ended.ended_at > 0
    assert decide(ended, EXEC, 3, "p").effects == []


def test_idle_and_ttl_reaping() -> None:
    state = ready()  # created at 1 s, idle 10 s, ttl 100 s
    assert reap(state, 5_000_000, "p").events == []
    (idle,) = reap(state, 11_000_001, "p").events
    assert idle.payload["reason"] == "idle_timeout"
    busy = replace(state, running=frozenset({"c"}), last_activity=95_000_000)
    assert reap(busy, 60_000_000, "p").events == []  # a running command is not idle
    (ttl,) = reap(busy, 101_000_001, "p").events
    assert ttl.payload["reason"] == "ttl"


def test_heartbeat_extends_the_idle_deadline() -> None:
    state = ready()
    (beat,) = decide(state, command("sandbox.heartbeat", {"reason": None}, at=9_000_000), 0, "p").events
    assert beat.type == "sandbox.heartbeat.recorded" and beat.payload["state"] == "ready"
    later = evolve(state, replace(beat, occurred_at=9_000_000))
    assert reap(later, 12_000_000, "p").events == []


def test_platform_grants_come_from_the_platform_records_only() -> None:
    granted = command("sandbox.create", RequestedSandbox("img", platform_upstreams=("model-gateway",)).create_payload())
    (asked, _) = decide(None, granted, 0, "p").events
    assert requested_state(asked).platform_upstreams == ("model-gateway",) and requested_state(asked).has_egress
    (asked, _) = decide(None, CREATE, 0, "p").events
    assert requested_state(asked).platform_upstreams == () and not requested_state(asked).has_egress
    requested = command(
        "sandbox.requested",
        {
            "state": "requested",
            "reason": None,
            "provider": None,
            "image": "img",
            "details": {"platform_upstreams": "model-gateway"},
        },
    )
    assert evolve(None, requested).platform_upstreams == ("model-gateway",)


def test_sandbox_requested_carries_the_create_spec_typed_and_folds_after_the_codec() -> None:
    spec = RequestedSandbox(
        "img", {"memory_mb": 300, "cpus": 1.5}, 60, 600, ("pypi.org", "GET example.com"), ("model-gateway",), "snap-1"
    )
    (asked, _) = decide(None, command("sandbox.create", spec.create_payload()), 0, "p").events
    assert asked.payload["spec"] == spec.record() and asked.payload["details"] == {}  # no string map
    codec = default_codec()
    decoded = codec.decode(codec.encode(asked))
    state = evolve(None, decoded)
    assert state == evolve(None, asked)
    assert (state.image, state.idle_timeout_s, state.ttl_s) == ("img", 60, 600)
    assert state.profile == {"memory_mb": 300, "cpus": 1.5}
    assert state.egress_allow == ("pypi.org", "GET example.com") and state.platform_upstreams == ("model-gateway",)
    assert state.restore_snapshot == "snap-1"


def test_a_v6_history_folds_to_the_state_the_typed_records_give() -> None:
    """Replay of a history written before the typed spec: a v6 create (flat fields, limits as text)
    answered now, and a v6 ``sandbox.requested`` (spec in the details string map) folded again."""
    (from_v6_create, _) = decide(None, V6_CREATE, 0, "p").events
    (from_typed, _) = decide(None, CREATE, 0, "p").events
    assert from_v6_create.payload["spec"] == from_typed.payload["spec"]  # the processor writes the typed form only
    v6_requested = command(
        "sandbox.requested",
        {
            "state": "requested",
            "reason": None,
            "provider": None,
            "image": "img",
            "details": {"idle_timeout_s": "10", "ttl_s": "100", "profile.memory_mb": "256"},
        },
    )
    assert evolve(None, v6_requested) == evolve(None, from_typed)


def test_a_table_entry_kept_before_the_typed_spec_reads_with_typed_limits() -> None:
    state = ready()
    kept = state.to_json() | {"profile": {"profile.memory_mb": "256", "profile.cpus": "1.5"}}
    assert SandboxState.from_json(kept) == replace(state, profile={"memory_mb": 256, "cpus": 1.5})


def test_recover_closes_accepted_commands_a_stopping_ended_or_vanished_sandbox_will_never_run() -> None:
    """The previous owner accepted an exec, a file write and a snapshot and stopped before running
    them; the sandbox is now stopping, ended, or gone: each still gets its answer, once."""
    write = command(
        "sandbox.file.write",
        {"request_id": "w1", "path": "/workspace/a", "content": b"x", "mode": 0o644, "artifact": None},
    )
    snap = command("sandbox.snapshot", {"snapshot_id": "s1", "name": None})
    state = ready()
    for offset, cmd in enumerate((EXEC, write, snap)):
        state = fold(state, decide(state, cmd, offset, "p").events)
    assert {p.command_id for p in state.pending} == {"c1", "w1", "s1"}
    for left in (replace(state, state="stopping"), replace(state, state="terminated"), state):
        decision = recover(left, left.state != "ready", "p", "moved")  # ready but gone: vanished
        answers = {
            (e.type, e.payload.get("command_id") or e.payload.get("request_id") or e.payload.get("snapshot_id"))
            for e in decision.events
            if e.type != "sandbox.failed"
        }
        assert answers == {("exec.finished", "c1"), ("file.written", "w1"), ("snapshot.failed", "s1")}, left.state
        assert all(e.payload["error"].startswith("unavailable:") for e in decision.events if e.type != "sandbox.failed")
        assert not [e for e in decision.effects if e.kind == "resume"]
        after = fold(left, decision.events)
        assert not after.pending
        assert not recover(after, left.state != "ready", "p", "moved").events  # answered once


def test_a_snapshot_and_a_file_write_sent_twice_are_accepted_once() -> None:
    """What ``api/idempotency.py`` relies on when a retry cannot tell whether its command went out."""
    state = ready()
    for cmd in (
        command("sandbox.snapshot", {"snapshot_id": "s1", "name": None}),
        command(
            "sandbox.file.write",
            {"request_id": "w1", "path": "/workspace/a", "content": b"x", "mode": 0o644, "artifact": None},
        ),
    ):
        first = decide(state, cmd, 1, "p")
        assert [e.type for e in first.events] == [f"{cmd.type.split('.')[1]}.accepted"] and first.effects
        state = fold(state, first.events)
        again = decide(state, cmd, 2, "p")  # the same ids at a new offset
        assert again.events == [] and again.effects == []


def test_a_command_finished_or_closed_never_starts_again() -> None:
    """An effect that waited (for its sandbox, or through a rebalance) may come to a command that was
    meanwhile closed, e.g. by another owner: it must not start it."""
    state = fold(ready(), decide(ready(), EXEC, 1, "p").events)
    closed_meanwhile = fold(
        state, finished(state, finished_payload("c1", None, 0.0, error="interrupted: x"), "p", EXEC)
    )
    assert not closed_meanwhile.pending and started(closed_meanwhile, "c1", ["true"], None, "p", EXEC) == []
    assert started(ready(), "never-accepted", ["true"], None, "p", EXEC) == []
