"""What an alert does, as a pure function: start a remediation run, attach to the issue's open run,
queue (over the project's rate limit), or be recorded only. No I/O; ``processors.alerts.processor``
supplies the facts (the issue's row, whether its run is still open, the project's recent starts).

Dedupe: one open remediation run per issue. "Open" is every state but the ended ones (merged,
rejected, failed, cancelled); a run not yet projected counts as open (it was just started).
Rate limit: at most ``rate_limit_runs`` runs started per project per ``rate_limit_window_s``;
alerts over it wait in the queue (one per issue: later alerts of a queued issue attach to it) and
start when the window has room. Run ids are derived from (integration, issue, generation), so a
decision redone after a crash starts the same run, which the orchestrator accepts once.
"""

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from astraforge.processors.runs.state import ENDED

NAMESPACE = uuid.UUID("5d8f1f5e-7a51-4c39-9a57-3f1f0b7a1e10")


@dataclass(frozen=True)
class IssueState:
    """An issue's remediation so far: its latest run, how many runs it had, whether an alert waits."""

    run_id: str | None = None
    generation: int = 0
    queued: bool = False


@dataclass(frozen=True)
class AlertOutcome:
    kind: Literal["start", "attach", "queue", "ignore"]
    run_id: str | None = None
    reason: str | None = None

    @property
    def record_type(self) -> str:
        return {
            "start": "alert.run_started",
            "attach": "alert.attached",
            "queue": "alert.queued",
            "ignore": "alert.ignored",
        }[self.kind]


def remediation_run_id(integration_id: str, issue_id: str, generation: int) -> str:
    return f"run-{uuid.uuid5(NAMESPACE, f'{integration_id}/{issue_id}/{generation}').hex}"


def derived_event_id(cause_event_id: str, type_: str) -> str:
    """The same record redone after a crash gets the same event id (readers can drop the copy)."""
    return str(uuid.uuid5(NAMESPACE, f"{cause_event_id}/{type_}"))


LOST = "lost"  # a run started long ago that never showed in the projection (``store.run_state``)


def run_is_open(run_state: str | None) -> bool:
    """``run_state`` as projected (None: not projected yet, so just started; ``LOST``: never will be)."""
    return run_state not in ENDED and run_state != LOST


def window_full(starts_us: list[int], at_us: int, limit: int, window_s: int) -> bool:
    since = at_us - window_s * 1_000_000
    return sum(1 for t in starts_us if t > since) >= limit


def decide(
    integration_id: str,
    alert: dict[str, Any],
    issue: IssueState,
    run_state: str | None,
    routed: str | None,
    starts_us: list[int],
    at_us: int,
    limit: int,
    window_s: int,
    from_queue: bool = False,
) -> AlertOutcome:
    """The outcome of one alert. ``routed`` names the mapped project (None: no repository for it);
    ``run_state`` is the issue's latest run's projected state; ``from_queue``: the alert waiting in
    the queue is being retried."""
    if not alert["actionable"]:
        what = f"{alert['resource']} {alert.get('action') or ''}".strip()
        return AlertOutcome("ignore", reason=f"recorded only: {what} starts no run")
    if routed is None:
        names = ", ".join(str(n) for n in (alert.get("project"), alert.get("project_id")) if n) or "(none)"
        return AlertOutcome("ignore", reason=f"no repository is mapped for project {names}")
    if issue.run_id is not None and run_is_open(run_state):
        return AlertOutcome("attach", issue.run_id, "the issue's remediation run is still open")
    if issue.queued and not from_queue:
        return AlertOutcome("attach", None, "an earlier alert of the issue waits in the queue")
    if window_full(starts_us, at_us, limit, window_s):
        return AlertOutcome("queue", reason=f"project {routed} started {limit} run(s) in the last {window_s} s")
    return AlertOutcome("start", remediation_run_id(integration_id, alert["alert_id"], issue.generation + 1))
