"""The run state machine as pure functions; every transition of a run is decided here.

``evolve(state, event)`` folds a run's own records; ``decide(state, command)`` says which records a
run command (``run.create``, ``run.cancel``, ``run.approve``, ``run.reject``, ``run.rerun``) produces
and which effects to start; ``advance``/``fact`` turn what a driver observed into records, once (a
driver that resumes after a crash asks again and gets nothing for what is already recorded). No I/O
here: ``processors.runs.orchestrator`` runs the effects.

    requested -> provisioning -> preparing -> running -> verifying -> awaiting_review
        -> approved -> merged  |  rejected  |  failed  |  cancelled
    (rerun with guidance: awaiting_review -> requested, attempt + 1; every attempt's records are kept)
"""

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from astraforge.schemas import Envelope

ENDED = frozenset({"merged", "rejected", "failed", "cancelled"})
ORDER = ("requested", "provisioning", "preparing", "running", "verifying", "awaiting_review", "approved", "merged")
DRIVEN = frozenset(ORDER[:5])  # an attempt under way: a driver (re)starts it


def attempt_sandbox_id(run_id: str, attempt: int) -> str:
    """Deterministic per attempt: a resumed driver asks for the same sandbox, never a second one (and
    the API admits it against the tenant's quota under this id before the run exists)."""
    return f"sb-{run_id.removeprefix('run-')}-a{attempt}"


@dataclass(frozen=True)
class RunEffect:
    """A side effect for the orchestrator: drive (the current attempt) | stop (``sandbox_id``, for
    ``reason``: the agent's command dies with it) | merge (push the approved patch, open the MR)."""

    kind: str
    reason: str | None = None
    sandbox_id: str | None = None


@dataclass(frozen=True)
class RunDecision:
    events: list[Envelope] = field(default_factory=list)
    effects: list[RunEffect] = field(default_factory=list)


@dataclass(frozen=True)
class RunState:
    run_id: str
    tenant_id: str
    request: dict[str, Any]  # the ``run.create`` payload, as accepted (the typed ``RunCreate`` record)
    state: str = "requested"
    attempt: int = 1
    guidance: tuple[str, ...] = ()  # one per rerun, oldest first
    events_from: int = 0  # events-topic offset of the run's first record: a driver reads its facts from here
    steps_done: int = 0  # diff.captured records of the current attempt
    tested: bool = False
    patch: dict[str, Any] | None = None  # the current attempt's ``patch.proposed`` payload
    approved_at: int = 0  # the approval's time: the merge commit's date (a redone commit is the same commit)
    merge_request: str | None = None
    reason: str | None = None
    created_at: int = 0
    ended_at: int = 0
    stopped_through: int = 0  # attempts 1..this had their sandbox's stop appended (not a fold of records)

    @property
    def sandbox_id(self) -> str:
        return attempt_sandbox_id(self.run_id, self.attempt)

    def sandboxes_to_stop(self) -> list[str]:
        """The sandboxes of this run's attempts that are over and whose stop was not appended yet: every
        earlier attempt's, and the current one's once the run is past its agent (awaiting review or
        later). A crash between deciding that (rerun, cancel, review) and stopping the sandbox left
        it running to its TTL; the next owner stops what this lists (a second stop is a no-op)."""
        over = self.attempt - 1 if self.state in DRIVEN else self.attempt
        return [attempt_sandbox_id(self.run_id, a) for a in range(self.stopped_through + 1, over + 1)]

    def with_stopped(self, sandbox_id: str) -> "RunState":
        """The state once ``sandbox_id``'s stop is appended: ``stopped_through`` moves past it when it is
        the next attempt's in line (an attempt's stop never hides an earlier one still to send)."""
        for a in range(self.stopped_through + 1, self.attempt + 1):
            if attempt_sandbox_id(self.run_id, a) == sandbox_id:
                return replace(self, stopped_through=a) if a == self.stopped_through + 1 else self
        return self

    @property
    def repository(self) -> str:
        return self.request["repo_url"]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["guidance"] = list(self.guidance)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunState":
        return cls(**{**data, "guidance": tuple(data["guidance"])})


def event(
    st: RunState, type_: str, payload: dict, actor: str, cause: Envelope | None = None, sandbox_id: str | None = None
) -> Envelope:
    return Envelope(
        type=type_,
        stream_id=st.run_id,
        tenant_id=st.tenant_id,
        actor=actor,
        sandbox_id=sandbox_id,
        causation_id=cause.event_id if cause else None,
        correlation_id=cause.correlation_id if cause else None,
        payload=payload,
    )


def lifecycle(st: RunState, new_state: str, actor: str, cause: Envelope | None = None, **extra) -> Envelope:
    """A ``run.<new_state>`` record (``RunLifecycle``)."""
    payload = {
        "state": new_state,
        "attempt": st.attempt,
        "reason": None,
        "title": st.request.get("title"),
        "agent": st.request.get("agent"),
        "sandbox_id": None,
        "repository": st.repository,
        "spec": None,
        **extra,
    }
    return event(st, f"run.{new_state}", payload, actor, cause)


def accepted_state(command: Envelope) -> RunState:
    return RunState(
        run_id=command.stream_id,
        tenant_id=command.tenant_id,
        request=dict(command.payload),
        created_at=command.occurred_at,
    )


def evolve(st: RunState | None, e: Envelope) -> RunState | None:
    """Fold one record of the run's stream into its state."""
    p = e.payload
    if e.type == "run.accepted":
        return st if st is not None else accepted_state(e)
    if st is None:
        return None
    if e.type.startswith("run.") and "state" in p and "attempt" in p:
        new = replace(
            st, state=p["state"], reason=p.get("reason"), ended_at=e.occurred_at if p["state"] in ENDED else 0
        )
        if p["attempt"] != st.attempt:  # a new attempt starts from nothing
            new = replace(new, attempt=p["attempt"], steps_done=0, tested=False, patch=None)
        if p["state"] == "approved":
            new = replace(new, approved_at=e.occurred_at)
        return new
    if e.type == "review.decided" and p["decision"] == "rerun":
        return replace(st, guidance=(*st.guidance, p.get("comment") or ""))
    if e.type == "diff.captured" and p["attempt"] == st.attempt:
        return replace(st, steps_done=max(st.steps_done, p["step"] + 1))
    if e.type == "test.result" and p["attempt"] == st.attempt:
        return replace(st, tested=True)
    if e.type == "patch.proposed" and p["attempt"] == st.attempt:
        return replace(st, patch=dict(p))
    if e.type == "merge_request.opened":
        return replace(st, merge_request=p["url"])
    return st


def decide(st: RunState | None, command: Envelope, actor: str) -> RunDecision:
    """What a run command does to a run in this state (the API refuses most misfits with 409 first;
    a redelivered command finds the state moved on and does nothing)."""
    if command.type == "run.create":
        if st is not None:
            return RunDecision()
        new = accepted_state(command)
        accepted = event(new, "run.accepted", dict(command.payload), actor, command)
        requested = lifecycle(new, "requested", actor, command, spec=command.payload["spec"])
        return RunDecision([accepted, requested], [RunEffect("drive")])
    if st is None or st.state in ENDED:
        return RunDecision()
    p = command.payload
    if command.type == "run.cancel" and st.state != "approved":  # approved: the merge is under way, it ends the run
        reason = p.get("reason") or "cancelled"
        return RunDecision(
            [lifecycle(st, "cancelled", actor, command, reason=reason, sandbox_id=st.sandbox_id)],
            [RunEffect("stop", "run cancelled", st.sandbox_id)],
        )
    if st.state != "awaiting_review":
        return RunDecision()
    if command.type in ("run.approve", "run.reject"):
        decision = "approve" if command.type == "run.approve" else "reject"
        review = {"decision": decision, "reviewer": p["reviewer"], "comment": p.get("comment"), "attempt": st.attempt}
        if decision == "approve":
            return RunDecision(
                [event(st, "review.decided", review, actor, command), lifecycle(st, "approved", actor, command)],
                [RunEffect("merge")],
            )
        rejected = lifecycle(st, "rejected", actor, command, reason=p.get("comment"))
        return RunDecision(
            [event(st, "review.decided", review, actor, command), rejected],
            [RunEffect("stop", "run rejected", st.sandbox_id)],
        )
    if command.type == "run.rerun":
        review = {
            "decision": "rerun",
            "reviewer": p.get("reason") or "reviewer",
            "comment": p.get("guidance"),
            "attempt": st.attempt,
        }
        next_attempt = replace(st, attempt=st.attempt + 1)
        return RunDecision(
            [
                event(st, "review.decided", review, actor, command),
                lifecycle(next_attempt, "requested", actor, command, reason="rerun with guidance"),
            ],
            [RunEffect("stop", "superseded by a new attempt", st.sandbox_id), RunEffect("drive")],
        )
    return RunDecision()


def advance(st: RunState, attempt: int, new_state: str, actor: str, **extra) -> list[Envelope]:
    """``run.<new_state>`` if the attempt is still current and the run has not reached it yet
    (a resumed driver passes through states already recorded without writing them again)."""
    if st.attempt != attempt or st.state in ENDED or new_state not in ORDER:
        return []
    if ORDER.index(new_state) <= ORDER.index(st.state):
        return []
    return [lifecycle(st, new_state, actor, **extra)]


def failed(st: RunState, attempt: int, reason: str, actor: str, before: list[Envelope] = ()) -> list[Envelope]:
    """``run.failed`` (after ``before``, e.g. the violation that caused it) unless the run ended already."""
    if st.attempt != attempt or st.state in ENDED:
        return []
    return [*before, lifecycle(st, "failed", actor, reason=reason, sandbox_id=st.sandbox_id)]


def fact(st: RunState, attempt: int, e: Envelope) -> list[Envelope]:
    """A driver's observation (diff.captured, test.result, patch.proposed, merge_request.opened,
    guardrail.violated), once: nothing if the attempt is over or the record is already there."""
    if st.attempt != attempt or (st.state in ENDED and e.type != "guardrail.violated"):
        return []
    p = e.payload
    done = {
        "diff.captured": lambda: st.steps_done > p.get("step", 0),
        "test.result": lambda: st.tested,
        "patch.proposed": lambda: st.patch is not None,
        "merge_request.opened": lambda: st.merge_request is not None,
    }.get(e.type, lambda: False)()
    return [] if done else [e]
