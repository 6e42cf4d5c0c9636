from dataclasses import replace

from astraforge.processors.sandbox_state import SandboxState, decide, evolve, from_create, reap
from astraforge.schemas import Envelope

SID = "sb-" + "a" * 32


def command(type_: str, payload: dict, at: int = 1_000_000) -> Envelope:
    return Envelope(type=type_, stream_id=SID, tenant_id="acme", actor="u", sandbox_id=SID, payload=payload,
                    occurred_at=at)  # fmt: skip


CREATE = command("sandbox.create", {"image": "img", "profile": {"memory_mb": "256"}, "cpus": None, "memory_mb": None,
                                    "pids": None, "idle_timeout_s": 10, "ttl_s": 100, "egress_allow": [],
                                    "restore_snapshot": None})  # fmt: skip


def ready() -> SandboxState:
    state = from_create(CREATE)
    for e in decide(None, CREATE, "p").events:
        state = evolve(state, e)
    return replace(state, state="ready", last_activity=CREATE.occurred_at)


def test_create_provisions_once() -> None:
    decision = decide(None, CREATE, "p")
    assert [e.type for e in decision.events] == ["sandbox.provisioning"]
    assert [e.kind for e in decision.effects] == ["provision"]
    assert decision.state.profile == {"profile.memory_mb": "256"} and decision.state.idle_timeout_s == 10
    provisioning = evolve(decision.state, decision.events[0])
    assert decide(provisioning, CREATE, "p").events == []  # redelivered create: nothing twice


def test_exec_runs_once_per_command_id() -> None:
    state = ready()
    run = command("sandbox.exec", {"command_id": "c1", "argv": ["true"]})
    assert [e.kind for e in decide(state, run, "p").effects] == ["exec"]
    started = Envelope(type="exec.started", stream_id=SID, tenant_id="acme", actor="p", sandbox_id=SID,
                       payload={"command_id": "c1", "argv": ["true"], "cwd": None, "pid": None})  # fmt: skip
    state = evolve(state, started)
    assert state.running == {"c1"}
    assert decide(state, run, "p").effects == []


def test_stop_and_commands_after_the_end() -> None:
    state = ready()
    stop = decide(state, command("sandbox.stop", {"reason": None}), "p")
    assert [e.type for e in stop.events] == ["sandbox.stopping"] and stop.effects[0].reason == "stop"
    ended = replace(state, state="terminated")
    assert decide(ended, command("sandbox.exec", {"command_id": "c2"}), "p").effects == []


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
    (beat,) = decide(state, command("sandbox.heartbeat", {"reason": None}, at=9_000_000), "p").events
    assert beat.type == "sandbox.heartbeat.recorded" and beat.payload["state"] == "ready"
    later = evolve(state, replace(beat, occurred_at=9_000_000))
    assert reap(later, 12_000_000, "p").events == []


def test_platform_grants_come_from_the_platform_records_only() -> None:
    granted = command("sandbox.create", {**CREATE.payload, "platform_upstreams": ["model-gateway"]})
    assert from_create(granted).platform_upstreams == ("model-gateway",) and from_create(granted).has_egress
    assert from_create(CREATE).platform_upstreams == () and not from_create(CREATE).has_egress
    requested = command("sandbox.requested", {"state": "requested", "reason": None, "provider": None, "image": "img",
                                              "details": {"platform_upstreams": "model-gateway"}})  # fmt: skip
    assert evolve(None, requested).platform_upstreams == ("model-gateway",)
