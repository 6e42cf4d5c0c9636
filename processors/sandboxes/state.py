"""The sandbox state machine as pure functions; every transition of a sandbox is decided here.

``evolve(state, event) -> state`` folds a sandbox's own events; ``decide(state, command, offset)``
says which events a command produces and which side effects to request; ``started``/``finished``/
``provisioned`` turn the outcome of an effect into events (busy ⇄ ready included); ``recover`` says
what a new owner of the sandbox's partition must do to finish or close what was left open; ``reap``
is the idle/TTL timer. No I/O here: ``processors.sandboxes.processor`` runs the effects.

    requested -> provisioning -> ready <-> busy -> stopping -> terminated      (+ failed)

Work commands (exec, file read/write, snapshot) are *accepted* first: ``exec.accepted`` (and
``file.accepted``, ``snapshot.accepted``) records the command's id and its offset in the commands
topic before the command counts as consumed; the command stays ``pending`` until its outcome record
(``exec.finished``, ``file.written``/``file.read``, ``snapshot.created``/``snapshot.failed``).
"""

from dataclasses import dataclass, field, fields, replace
from typing import Any

from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox, limits_from_text

ENDED = {"terminated", "failed"}
RECENT = 256  # finished command ids kept to drop a redelivered command (redelivery spans < one commit interval)
ACCEPTED = {"sandbox.exec": "exec", "sandbox.file.write": "file", "sandbox.file.read": "file",
            "sandbox.snapshot": "snapshot"}  # fmt: skip
OUTCOMES = {"exec.finished", "file.written", "file.read", "snapshot.created", "snapshot.failed"}
NEVER_RAN = "unavailable: the sandbox stopped before the command ran"  # an accepted command closed unrun


@dataclass(frozen=True)
class Pending:
    """A work command accepted and not yet finished: enough to run it again or to close it."""

    command_id: str
    command_type: str
    offset: int  # of the command in its partition of the commands topic


@dataclass(frozen=True)
class SandboxState:
    sandbox_id: str
    stream_id: str
    tenant_id: str
    state: str = "requested"
    image: str = "astraforge/sandbox:bookworm"
    profile: dict[str, Any] = field(default_factory=dict)  # the limits asked for (``RequestedSandbox.limits``)
    idle_timeout_s: int = 900
    ttl_s: int = 3600
    created_at: int = 0
    last_activity: int = 0
    ended_at: int = 0
    running: frozenset[str] = frozenset()
    # events-topic offset of each running command's exec.started (its output follows): where a new owner
    # of the partition counts the output recorded so far to re-attach (a state of an older release has none)
    started_offsets: dict[str, int] = field(default_factory=dict)
    pending: tuple[Pending, ...] = ()
    recent: tuple[str, ...] = ()  # the last RECENT finished command ids, oldest first
    restore_snapshot: str | None = None
    provider_id: str | None = None  # the provider's name for it: a warm-pool sandbox keeps its pool id
    egress_allow: tuple[str, ...] = ()
    platform_upstreams: tuple[str, ...] = ()  # granted by the platform, never by the tenant

    @property
    def has_egress(self) -> bool:
        return bool(self.egress_allow or self.platform_upstreams)

    @property
    def runtime_id(self) -> str:
        return self.provider_id or self.sandbox_id

    def seen(self, command_id: str) -> bool:
        """Accepted before (pending, running or recently finished): a redelivery, not a new command."""
        return (
            command_id in self.running
            or command_id in self.recent
            or any(p.command_id == command_id for p in self.pending)
        )

    def deadline(self) -> tuple[int, str]:
        """When (µs) and why this sandbox must be reaped if nothing else happens."""
        idle = self.last_activity + self.idle_timeout_s * 1_000_000
        ttl = self.created_at + self.ttl_s * 1_000_000
        return (idle, "idle_timeout") if idle < ttl else (ttl, "ttl")

    # -- the table's representation (JSON) ------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (``dataclasses.asdict`` deep-copies each one: several times slower,
        and this runs for every table write)."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["profile"] = dict(self.profile)
        data["started_offsets"] = dict(self.started_offsets)
        data["running"] = sorted(self.running)
        data["pending"] = [[p.command_id, p.command_type, p.offset] for p in self.pending]
        for name in ("recent", "egress_allow", "platform_upstreams"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SandboxState":
        data = dict(data)
        data["running"] = frozenset(data["running"])
        data["started_offsets"] = {str(k): int(v) for k, v in (data.get("started_offsets") or {}).items()}
        data["pending"] = tuple(Pending(*p) for p in data["pending"])
        for name in ("recent", "egress_allow", "platform_upstreams"):
            data[name] = tuple(data[name])
        if any(k.startswith("profile.") for k in data["profile"]):  # kept by a release before the typed spec
            data["profile"] = limits_from_text({k.removeprefix("profile."): v for k, v in data["profile"].items()})
        return cls(**data)


_FIELDS = tuple(f.name for f in fields(SandboxState))


@dataclass(frozen=True)
class Effect:
    """A side effect for the runtime: provision | exec | cancel | write | read | snapshot | stop | egress
    | resume (run an accepted command again: ``pending`` names it) | reattach (read on a started command
    that another owner ran: ``pending`` names it)."""

    kind: str
    command: Envelope | None = None
    reason: str | None = None
    pending: Pending | None = None


@dataclass(frozen=True)
class Decision:
    events: list[Envelope] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)


def event(sandbox: SandboxState, type_: str, payload: dict, actor: str, cause: Envelope | None = None) -> Envelope:
    return Envelope(
        type=type_,
        stream_id=sandbox.stream_id,
        tenant_id=sandbox.tenant_id,
        actor=actor,
        sandbox_id=sandbox.sandbox_id,
        causation_id=cause.event_id if cause else None,
        correlation_id=cause.correlation_id if cause else None,
        payload=payload,
    )


def lifecycle(sandbox: SandboxState, new_state: str, actor: str, cause: Envelope | None = None, **payload) -> Envelope:
    """A ``sandbox.<new_state>`` event; ``payload`` may override the state field (heartbeats)."""
    body = {"state": new_state, "reason": None, "provider": None, "image": None, "details": {}, "spec": None, **payload}
    return event(sandbox, f"sandbox.{new_state}", body, actor, cause)


def _finish(state: SandboxState, command_id: str) -> SandboxState:
    return replace(
        state,
        running=state.running - {command_id},
        started_offsets={k: v for k, v in state.started_offsets.items() if k != command_id},
        pending=tuple(p for p in state.pending if p.command_id != command_id),
        recent=(*[c for c in state.recent if c != command_id], command_id)[-RECENT:],
    )


def evolve(state: SandboxState | None, event: Envelope, offset: int | None = None) -> SandboxState | None:
    """Fold one event of the sandbox's stream into its state; ``offset``: the event's offset in the
    events topic, when known (an ``exec.started`` keeps it, see ``SandboxState.started_offsets``)."""
    p = event.payload
    if event.type == "sandbox.requested":
        return state if state is not None else requested_state(event)  # written once; a second one changes nothing
    if state is None:
        return None
    if event.type.startswith("sandbox.") and "state" in p and event.type != "sandbox.heartbeat.recorded":
        provider_id = (p.get("details") or {}).get("provider_id") or state.provider_id
        ended_at = event.occurred_at if p["state"] in ENDED else 0
        return replace(
            state, state=p["state"], last_activity=event.occurred_at, provider_id=provider_id, ended_at=ended_at
        )
    if event.type == "sandbox.heartbeat.recorded":
        return replace(state, last_activity=event.occurred_at)
    if event.type.endswith(".accepted"):
        if state.seen(p["command_id"]):
            return state
        accepted = Pending(p["command_id"], p["command_type"], p["command_offset"])
        return replace(state, pending=(*state.pending, accepted), last_activity=event.occurred_at)
    if event.type == "exec.started":
        offsets = state.started_offsets if offset is None else {**state.started_offsets, p["command_id"]: offset}
        return replace(
            state, running=state.running | {p["command_id"]}, started_offsets=offsets, last_activity=event.occurred_at
        )
    if event.type in OUTCOMES:
        key = p.get("command_id") or p.get("request_id") or p.get("snapshot_id")
        return replace(_finish(state, key), last_activity=event.occurred_at)
    return state


def requested_state(requested: Envelope) -> SandboxState:
    """The state a ``sandbox.requested`` event describes (its spec: ``RequestedSandbox.read``)."""
    spec = RequestedSandbox.read(requested.payload)
    return SandboxState(
        sandbox_id=requested.sandbox_id or requested.stream_id,
        stream_id=requested.stream_id,
        tenant_id=requested.tenant_id,
        image=spec.image or SandboxState.image,
        profile=dict(spec.limits),
        idle_timeout_s=spec.idle_timeout_s,
        ttl_s=spec.ttl_s,
        created_at=requested.occurred_at,
        last_activity=requested.occurred_at,
        restore_snapshot=spec.restore_snapshot,
        egress_allow=spec.egress_allow,
        platform_upstreams=spec.platform_upstreams,
    )


def requested(command: Envelope, actor: str) -> Envelope:
    """The ``sandbox.requested`` event of a ``sandbox.create`` command (the processor writes it):
    the command's spec, typed, whichever release wrote the command."""
    spec = RequestedSandbox.read(command.payload)
    sandbox_id = command.sandbox_id or command.stream_id
    return Envelope(
        type="sandbox.requested",
        stream_id=command.stream_id,
        tenant_id=command.tenant_id,
        actor=actor,
        sandbox_id=sandbox_id,
        causation_id=command.event_id,
        correlation_id=command.correlation_id,
        occurred_at=command.occurred_at,
        payload={
            "state": "requested",
            "reason": None,
            "provider": None,
            "image": spec.image,
            "details": {},
            "spec": spec.record(),
        },
    )


def _accept(state: SandboxState, command: Envelope, command_id: str, offset: int, kind: str, actor: str) -> Decision:
    if state.seen(command_id):
        return Decision()  # redelivered: never run a command twice
    accepted = {
        "command_id": command_id,
        "command_type": command.type,
        "command_offset": offset,
        "requested_by": command.actor,  # on a shared sandbox, whose command this is
    }
    return Decision(
        [event(state, f"{ACCEPTED[command.type]}.accepted", accepted, actor, command)], [Effect(kind, command)]
    )


def decide(state: SandboxState | None, command: Envelope, offset: int, actor: str) -> Decision:
    """What a command (at ``offset`` of the commands topic) does to a sandbox in this state."""
    if command.type == "sandbox.create":
        if state is None:
            first = requested(command, actor)
            state = requested_state(first)
            return Decision(
                [first, lifecycle(state, "provisioning", actor, command, image=state.image)], [Effect("provision")]
            )
        if state.state == "requested":  # a sandbox.requested the API wrote (before the processor did)
            provisioning = lifecycle(state, "provisioning", actor, command, image=state.image)
            return Decision([provisioning], [Effect("provision")])
        return Decision()  # duplicate delivery, or a create for a sandbox that already moved on
    if state is None or state.state in ENDED:
        return Decision()  # nothing to act on (the API refuses these before they get here)
    p = command.payload
    if command.type == "sandbox.exec":
        return _accept(state, command, p["command_id"], offset, "exec", actor)
    if command.type == "sandbox.exec.cancel":
        return Decision(effects=[Effect("cancel", command)])
    if command.type in ("sandbox.file.write", "sandbox.file.read"):
        kind = "write" if command.type.endswith("write") else "read"
        return _accept(state, command, p["request_id"], offset, kind, actor)
    if command.type == "sandbox.snapshot":
        return _accept(state, command, p["snapshot_id"], offset, "snapshot", actor)
    if command.type == "sandbox.heartbeat":
        return Decision([lifecycle(state, "heartbeat.recorded", actor, command, state=state.state)])
    if command.type in ("sandbox.stop", "sandbox.delete"):
        if state.state == "stopping":
            return Decision()
        reason = p.get("reason") or command.type.removeprefix("sandbox.")
        return Decision([lifecycle(state, "stopping", actor, command, reason=reason)], [Effect("stop", reason=reason)])
    return Decision()


def started(
    state: SandboxState, command_id: str, argv: list[str], cwd: str | None, actor: str, cause: Envelope | None
) -> list[Envelope]:
    """A command began to run: ``exec.started``, and ``sandbox.busy`` if it is the only one. Nothing if
    it is running already, or is no longer pending (finished or closed, e.g. by another owner of the
    partition while an effect here still waited to run it): a command starts once."""
    if command_id in state.running or state.state not in ("ready", "busy"):
        return []
    if not any(p.command_id == command_id for p in state.pending):
        return []
    events = [
        event(state, "exec.started", {"command_id": command_id, "argv": argv, "cwd": cwd, "pid": None}, actor, cause)
    ]
    if state.state == "ready":
        events.append(lifecycle(state, "busy", actor, cause))
    return events


def finished(
    state: SandboxState, payload: dict, actor: str, cause: Envelope | None, before: list[Envelope] = ()
) -> list[Envelope]:
    """A command ended (``payload`` of ``exec.finished``): the records it left (``before``), its
    ``exec.finished``, and ``sandbox.ready`` if it was the last one running. Nothing if it was already
    closed (e.g. by a new owner of the partition)."""
    command_id = payload["command_id"]
    if not any(p.command_id == command_id for p in state.pending) and command_id not in state.running:
        return []
    events = [*before, event(state, "exec.finished", payload, actor, cause)]
    if state.state == "busy" and state.running <= {command_id}:
        events.append(lifecycle(state, "ready", actor, cause))
    return events


def outcome(
    state: SandboxState, type_: str, payload: dict, actor: str, cause: Envelope | None, before: list[Envelope] = ()
) -> list[Envelope]:
    """A file or snapshot command's answer, once: nothing if it was already answered."""
    key = payload.get("request_id") or payload.get("snapshot_id")
    if not any(p.command_id == key for p in state.pending):
        return []
    return [*before, event(state, type_, payload, actor, cause)]


def finished_payload(command_id: str, exit_code: int | None, duration_ms: float, **flags) -> dict:
    """An ``exec.finished`` payload (the API answers its ``ExecResult`` from these records)."""
    return {
        "command_id": command_id,
        "exit_code": exit_code,
        "duration_ms": duration_ms,
        "timed_out": False,
        "cancelled": False,
        "truncated": False,
        "error": None,
        **flags,
    }


def provisioned(state: SandboxState, actor: str, provider: str, details: dict) -> list[Envelope]:
    """The provider made the sandbox: ``sandbox.ready``, unless it was stopped meanwhile."""
    if state.state not in ("requested", "provisioning"):
        return []
    return [lifecycle(state, "ready", actor, provider=provider, image=state.image, details=details)]


def closed(state: SandboxState, pending: Pending, error: str, actor: str) -> Envelope:
    """The record that closes an accepted command that will never run (or never end) here: its
    ``exec.finished``, ``snapshot.failed`` or file answer, carrying ``error``."""
    if pending.command_type == "sandbox.exec":
        return event(state, "exec.finished", finished_payload(pending.command_id, None, 0.0, error=error), actor)
    if pending.command_type == "sandbox.snapshot":
        return event(state, "snapshot.failed", {"snapshot_id": pending.command_id, "error": error}, actor)
    kind = "file.written" if pending.command_type.endswith("write") else "file.read"
    payload = {
        "request_id": pending.command_id,
        "path": "",
        "size": 0,
        "sha256": "",
        "content": None,
        "artifact": None,
        "error": error,
    }
    return event(state, kind, payload, actor)


def recover(
    state: SandboxState, present: bool, actor: str, reason: str, running_here: frozenset[str] = frozenset()
) -> Decision:
    """What a new owner of the sandbox's partition does with what the previous one left open.

    A command that had started goes on running in the sandbox (the supervisor keeps it when its host
    goes away): the new owner *re-attaches* to it (``Effect("reattach")``) and records the rest of its
    output and its exit, from where the stream's records of it end. Only when that cannot be (the
    sandbox vanished or is stopping, or the command started under a release that did not keep where
    its output begins) is it closed (``exec.finished`` with ``interrupted: <reason>``) and its process
    cancelled: running it again could repeat its effects. One that was accepted but never
    started runs now, if the sandbox can still run it; if it is stopping, ended or vanished, it is
    closed as never run (every accepted command gets its answer). A half-done provision is completed,
    a stop finished, a sandbox that vanished is marked failed, and a live one gets its egress proxy back.

    ``running_here``: commands an effect of this very instance still runs (a take-over that reloads
    a partition it held, after the group went a generation without it). Nobody closed them (the state
    says they run), so they go on and write their own outcome: closing them would interrupt a command
    that is running correctly.
    """
    events: list[Envelope] = []
    effects: list[Effect] = []
    interrupted = f"interrupted: {reason}"
    runnable = present or state.state in ("requested", "provisioning")
    can_run = runnable and state.state not in ENDED and state.state != "stopping"
    pending_ids = {p.command_id for p in state.pending}
    attachable = present and state.state in ("ready", "busy")
    reattached = 0
    for pending in state.pending:
        if pending.command_id in running_here and attachable:
            continue  # this instance never let go of it (a reload after a missed generation): it goes on
        if pending.command_id in state.running and attachable and pending.command_id in state.started_offsets:
            effects.append(Effect("reattach", pending=pending))
            reattached += 1
        elif pending.command_id in state.running:
            events.append(closed(state, pending, interrupted, actor))
            effects.append(Effect("cancel", reason=pending.command_id))
        elif can_run:
            effects.append(Effect("resume", pending=pending))
        else:
            events.append(closed(state, pending, NEVER_RAN, actor))
    for command_id in sorted(state.running - pending_ids):  # started before exec.accepted existed
        events.append(event(state, "exec.finished", finished_payload(command_id, None, 0.0, error=interrupted), actor))
    if state.state in ENDED:
        return Decision(events)
    if state.state == "busy" and present and not reattached and not running_here & state.running:
        events.append(lifecycle(state, "ready", actor))  # every command that was running is closed
    if state.state in ("requested", "provisioning"):
        if state.state == "requested":
            events.append(lifecycle(state, "provisioning", actor, image=state.image))
        return Decision(events, [Effect("provision", reason="reconcile"), *effects])
    if state.state == "stopping":
        return Decision(events, [Effect("stop", reason="stop")])  # the stop ends what runs
    if not present:
        lost = lifecycle(state, "failed", actor, reason="lost: the sandbox vanished while unobserved")
        return Decision([*events, lost])
    return Decision(events, [Effect("egress"), *effects])


def reap(state: SandboxState, now: int, actor: str) -> Decision:
    """Idle and TTL reaping: a timer calls this; past the deadline the sandbox is stopped."""
    if state.state not in ("ready", "busy") or (state.running and state.deadline()[1] == "idle_timeout"):
        return Decision()
    when, why = state.deadline()
    if now < when:
        return Decision()
    return Decision([lifecycle(state, "stopping", actor, reason=why)], [Effect("stop", reason=why)])
