"""The sandbox state machine as pure functions: ``evolve(state, event) -> state`` folds a sandbox's
own events; ``decide(state, command, now) -> Decision`` says which events a command produces and
which side effects to request. No I/O here; ``processors.sandboxes`` runs the effects.

    requested -> provisioning -> ready <-> busy -> stopping -> terminated      (+ failed)
"""

from dataclasses import dataclass, field, replace
from typing import Any

from astraforge.schemas import Envelope

LIVE = {"requested", "provisioning", "ready", "busy"}
ENDED = {"terminated", "failed"}


@dataclass(frozen=True)
class SandboxState:
    sandbox_id: str
    stream_id: str
    tenant_id: str
    state: str = "requested"
    image: str = "astraforge/sandbox:bookworm"
    profile: dict[str, Any] = field(default_factory=dict)
    idle_timeout_s: int = 900
    ttl_s: int = 3600
    created_at: int = 0
    last_activity: int = 0
    running: frozenset[str] = frozenset()
    seen_commands: frozenset[str] = frozenset()
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

    def deadline(self) -> tuple[int, str]:
        """When (µs) and why this sandbox must be reaped if nothing else happens."""
        idle = self.last_activity + self.idle_timeout_s * 1_000_000
        ttl = self.created_at + self.ttl_s * 1_000_000
        return (idle, "idle_timeout") if idle < ttl else (ttl, "ttl")


@dataclass(frozen=True)
class Effect:
    """A side effect for the runtime: provision | exec | cancel | write | read | snapshot | stop."""

    kind: str
    command: Envelope | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    events: list[Envelope] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    state: SandboxState | None = None  # a state the command itself introduced (create)


def lifecycle(sandbox: SandboxState, new_state: str, actor: str, cause: Envelope | None = None, **payload) -> Envelope:
    """A ``sandbox.<new_state>`` event; ``payload`` may override the state field (heartbeats)."""
    return Envelope(
        type=f"sandbox.{new_state}",
        stream_id=sandbox.stream_id,
        tenant_id=sandbox.tenant_id,
        actor=actor,
        sandbox_id=sandbox.sandbox_id,
        causation_id=cause.event_id if cause else None,
        correlation_id=cause.correlation_id if cause else None,
        payload={"state": new_state, "reason": None, "provider": None, "image": None, "details": {}, **payload},
    )


def evolve(state: SandboxState | None, event: Envelope) -> SandboxState | None:
    """Fold one event of the sandbox's stream into its state."""
    p = event.payload
    if event.type == "sandbox.requested":
        details = p.get("details") or {}
        profile = {k: v for k, v in details.items() if k.startswith("profile.")}
        return SandboxState(
            sandbox_id=event.sandbox_id or event.stream_id, stream_id=event.stream_id, tenant_id=event.tenant_id,
            image=p.get("image") or SandboxState.image, profile=profile,
            idle_timeout_s=int(details.get("idle_timeout_s", 900)), ttl_s=int(details.get("ttl_s", 3600)),
            created_at=event.occurred_at, last_activity=event.occurred_at,
            restore_snapshot=details.get("restore_snapshot"),
            egress_allow=tuple(r for r in details.get("egress_allow", "").split("\n") if r),
            platform_upstreams=tuple(u for u in details.get("platform_upstreams", "").split("\n") if u),
        )  # fmt: skip
    if state is None:
        return None
    if event.type.startswith("sandbox.") and "state" in p and event.type != "sandbox.heartbeat.recorded":
        provider_id = (p.get("details") or {}).get("provider_id") or state.provider_id
        return replace(state, state=p["state"], last_activity=event.occurred_at, provider_id=provider_id)
    if event.type == "sandbox.heartbeat.recorded":
        return replace(state, last_activity=event.occurred_at)
    if event.type == "exec.started":
        cid = p["command_id"]
        return replace(state, running=state.running | {cid}, seen_commands=state.seen_commands | {cid},
                       last_activity=event.occurred_at)  # fmt: skip
    if event.type == "exec.finished":
        return replace(state, running=state.running - {p["command_id"]}, last_activity=event.occurred_at)
    if event.type in ("file.written", "file.read"):
        return replace(state, seen_commands=state.seen_commands | {p["request_id"]}, last_activity=event.occurred_at)
    return state


def from_create(command: Envelope) -> SandboxState:
    """The initial state a ``sandbox.create`` command describes (same as its ``sandbox.requested``)."""
    p = command.payload
    return SandboxState(
        sandbox_id=command.sandbox_id or command.stream_id, stream_id=command.stream_id, tenant_id=command.tenant_id,
        image=p["image"], profile={f"profile.{k}": v for k, v in p["profile"].items()},
        idle_timeout_s=p["idle_timeout_s"], ttl_s=p["ttl_s"], created_at=command.occurred_at,
        last_activity=command.occurred_at, restore_snapshot=p["restore_snapshot"],
        egress_allow=tuple(p["egress_allow"]), platform_upstreams=tuple(p.get("platform_upstreams") or ()),
    )  # fmt: skip


def decide(state: SandboxState | None, command: Envelope, actor: str) -> Decision:
    """What a command does to a sandbox in this state."""
    if command.type == "sandbox.create" and state is None:
        state = from_create(command)  # the processor had not seen the API's sandbox.requested event
    if command.type == "sandbox.create":
        if state is None or state.state != "requested":
            return Decision()  # duplicate delivery, or a create for a sandbox that already moved on
        return Decision(
            [lifecycle(state, "provisioning", actor, command, image=state.image)], [Effect("provision")], state
        )
    if state is None or state.state in ENDED:
        return Decision()  # nothing to act on (the API refuses these before they get here)
    if command.type == "sandbox.exec":
        if command.payload["command_id"] in state.seen_commands:
            return Decision()  # redelivered after a restart: never run a command twice
        return Decision(effects=[Effect("exec", command)])
    if command.type == "sandbox.exec.cancel":
        return Decision(effects=[Effect("cancel", command)])
    if command.type in ("sandbox.file.write", "sandbox.file.read"):
        if command.payload["request_id"] in state.seen_commands:
            return Decision()
        return Decision(effects=[Effect("write" if command.type.endswith("write") else "read", command)])
    if command.type == "sandbox.snapshot":
        return Decision(effects=[Effect("snapshot", command)])
    if command.type == "sandbox.heartbeat":
        return Decision([lifecycle(state, "heartbeat.recorded", actor, command, state=state.state)])
    if command.type in ("sandbox.stop", "sandbox.delete"):
        if state.state == "stopping":
            return Decision()
        reason = command.payload.get("reason") or command.type.removeprefix("sandbox.")
        return Decision([lifecycle(state, "stopping", actor, command, reason=reason)], [Effect("stop", reason=reason)])
    return Decision()


def reap(state: SandboxState, now: int, actor: str) -> Decision:
    """Idle and TTL reaping: a timer calls this; past the deadline the sandbox is stopped."""
    if state.state not in ("ready", "busy") or (state.running and state.deadline()[1] == "idle_timeout"):
        return Decision()
    when, why = state.deadline()
    if now < when:
        return Decision()
    return Decision([lifecycle(state, "stopping", actor, reason=why)], [Effect("stop", reason=why)])
