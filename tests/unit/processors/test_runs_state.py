"""The run state machine with plain values: decide/evolve/advance/fact, no broker."""

from astraforge.processors.runs.state import ENDED, RunDecision, RunState, advance, decide, evolve, fact, failed
from astraforge.schemas import Envelope

ACTOR = "processor:runs"
REQUEST = {
    "title": "t",
    "spec": "fix it",
    "agent": "script",
    "repo_url": "/r.git",
    "base_ref": "main",
    "test_command": None,
    "source": "api",
    "alert_id": None,
    "writable_paths": [],
    "steps": [],
    "egress_allow": [],
    "model": None,
}


def command(type_: str, payload: dict | None = None) -> Envelope:
    return Envelope(type=type_, stream_id="run-1", tenant_id="t", actor="tenant:t", payload=payload or {})


def fold(st: RunState | None, events: list[Envelope]) -> RunState | None:
    for e in events:
        st = evolve(st, e)
    return st


def created() -> RunState:
    decision = decide(None, command("run.create", REQUEST), ACTOR)
    assert [e.type for e in decision.events] == ["run.accepted", "run.requested"]
    assert [x.kind for x in decision.effects] == ["drive"]
    return fold(None, decision.events)


def test_a_create_accepts_once() -> None:
    st = created()
    assert (st.state, st.attempt, st.request["spec"], st.sandbox_id) == ("requested", 1, "fix it", "sb-1-a1")
    assert decide(st, command("run.create", REQUEST), ACTOR).events == []  # redelivered


def test_advance_writes_each_state_once_and_in_order() -> None:
    st = created()
    st = fold(st, advance(st, 1, "provisioning", ACTOR))
    assert advance(st, 1, "provisioning", ACTOR) == [] and advance(st, 1, "requested", ACTOR) == []
    assert advance(st, 2, "preparing", ACTOR) == []  # another attempt's driver
    assert [e.type for e in advance(st, 1, "preparing", ACTOR)] == ["run.preparing"]


def test_facts_are_written_once_per_attempt() -> None:
    st = fold(created(), [])
    diff = Envelope(
        type="diff.captured",
        stream_id="run-1",
        tenant_id="t",
        actor=ACTOR,
        payload={"attempt": 1, "step": 0, "files": ["a"]},
    )
    assert fact(st, 1, diff) == [diff]
    st = evolve(st, diff)
    assert fact(st, 1, diff) == [] and st.steps_done == 1
    assert fact(st, 2, diff) == []


def awaiting(st: RunState) -> RunState:
    for state in ("provisioning", "preparing", "running", "verifying", "awaiting_review"):
        st = fold(st, advance(st, st.attempt, state, ACTOR))
    return st


def test_review_only_when_awaiting_and_approve_starts_the_merge() -> None:
    st = created()
    approve = command("run.approve", {"decision": "approve", "reviewer": "r", "comment": None, "attempt": 1})
    assert decide(st, approve, ACTOR).events == []
    st = awaiting(st)
    decision = decide(st, approve, ACTOR)
    assert [e.type for e in decision.events] == ["review.decided", "run.approved"]
    assert [x.kind for x in decision.effects] == ["merge"]
    st = fold(st, decision.events)
    assert st.state == "approved" and st.approved_at > 0
    assert decide(st, approve, ACTOR).events == []


def test_rerun_starts_a_new_attempt_with_guidance_and_stops_the_old_sandbox() -> None:
    st = awaiting(created())
    decision = decide(st, command("run.rerun", {"reason": None, "guidance": "smaller"}), ACTOR)
    assert [(x.kind, x.sandbox_id) for x in decision.effects] == [("stop", "sb-1-a1"), ("drive", None)]
    st = fold(st, decision.events)
    assert (st.state, st.attempt, st.guidance, st.sandbox_id, st.steps_done) == (
        "requested",
        2,
        ("smaller",),
        "sb-1-a2",
        0,
    )


def test_cancel_ends_the_run_at_any_stage_and_later_facts_are_dropped() -> None:
    st = fold(created(), [])
    st = fold(st, advance(st, 1, "provisioning", ACTOR))
    decision = decide(st, command("run.cancel", {"reason": "stop", "guidance": None}), ACTOR)
    assert [(x.kind, x.sandbox_id) for x in decision.effects] == [("stop", "sb-1-a1")]
    st = fold(st, decision.events)
    assert st.state == "cancelled" and st.state in ENDED
    assert advance(st, 1, "preparing", ACTOR) == [] and failed(st, 1, "late", ACTOR) == []
    assert decide(st, command("run.cancel", {}), ACTOR).events == []


def test_state_round_trips_through_the_table() -> None:
    st = awaiting(created())
    assert RunState.from_json(st.to_json()) == st


def test_an_approved_run_is_being_merged_and_cannot_be_cancelled() -> None:
    """Cancel after approval used to end the run as cancelled while its merge driver went on: the
    branch was pushed and the merge request opened, then both records were dropped (the run had
    ended), leaving a merge request no run points at. The approval is the decision; the merge ends it."""
    st = awaiting(created())
    approve = command("run.approve", {"decision": "approve", "reviewer": "r", "comment": None, "attempt": 1})
    st = fold(st, decide(st, approve, ACTOR).events)
    assert decide(st, command("run.cancel", {"reason": "late"}), ACTOR) == RunDecision()
    opened = Envelope(type="merge_request.opened", stream_id="run-1", tenant_id="t", actor=ACTOR, payload={"url": "u"})
    assert fact(st, 1, opened) == [opened]
    st = fold(st, [opened, *advance(fold(st, [opened]), 1, "merged", ACTOR)])
    assert (st.state, st.merge_request) == ("merged", "u")
