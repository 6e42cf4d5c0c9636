"""The alert policy with plain values: dedupe by issue, the per-project rate limit, the queue."""

from astraforge.processors.alerts.state import LOST, IssueState, decide, remediation_run_id, window_full
from astraforge.producers.alert_payloads import alert

HOUR = 3600
T = 1_800_000_000_000_000  # micros


def an_alert(issue: str = "42", **fields) -> dict:
    return alert("sentry", issue, "boom", project="calc", **fields)


def test_a_new_issue_starts_a_run_with_a_derived_id() -> None:
    out = decide("int-1", an_alert(), IssueState(), None, "calc", [], T, 2, HOUR)
    assert (out.kind, out.run_id) == ("start", remediation_run_id("int-1", "42", 1))
    assert out.run_id == remediation_run_id("int-1", "42", 1)  # redone after a crash: the same run


def test_an_alert_of_an_issue_with_an_open_run_attaches_to_it() -> None:
    issue = IssueState(run_id="run-a", generation=1)
    for state in (None, "requested", "running", "awaiting_review", "approved"):
        out = decide("int-1", an_alert(), issue, state, "calc", [T], T, 2, HOUR)
        assert (out.kind, out.run_id) == ("attach", "run-a"), state


def test_once_the_run_ended_the_next_alert_starts_the_next_generation() -> None:
    issue = IssueState(run_id="run-a", generation=1)
    for state in ("merged", "rejected", "failed", "cancelled", LOST):
        out = decide("int-1", an_alert(), issue, state, "calc", [], T, 2, HOUR)
        assert (out.kind, out.run_id) == ("start", remediation_run_id("int-1", "42", 2)), state


def test_over_the_rate_limit_alerts_queue_and_start_when_the_window_has_room() -> None:
    starts = [T - 10, T - 5]
    out = decide("int-1", an_alert(), IssueState(), None, "calc", starts, T, 2, HOUR)
    assert out.kind == "queue"
    queued = IssueState(queued=True)
    assert (
        decide("int-1", an_alert(), queued, None, "calc", starts, T, 2, HOUR).kind == "attach"
    )  # one queued per issue
    later = T + HOUR * 1_000_000
    assert not window_full(starts, later, 2, HOUR)
    out = decide("int-1", an_alert(), queued, None, "calc", starts, later, 2, HOUR, from_queue=True)
    assert out.kind == "start"


def test_unmapped_projects_and_non_alerts_are_recorded_only() -> None:
    assert decide("int-1", an_alert(), IssueState(), None, None, [], T, 2, HOUR).kind == "ignore"
    install = alert("sentry", "", "installation created", resource="installation", actionable=False)
    out = decide("int-1", install, IssueState(), None, "calc", [], T, 2, HOUR)
    assert out.kind == "ignore" and "installation" in out.reason
