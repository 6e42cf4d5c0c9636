"""Requests and runs: start a run from a request, list and show runs, review and cancel them.

``POST /v1/requests`` checks the request (422), the tenant's repository allowlist (403, with a
``guardrail.violated`` record) and honours an ``Idempotency-Key``; it appends ``run.create`` and
answers once the run orchestrator accepted it. Reviews and cancels are commands too: the route
checks the run's state (409 when it cannot take them) and the orchestrator decides. Reads come from
the projection: the ``runs`` table and the run's records.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from astraforge.api.commands import new_run_id
from astraforge.api.deps import AppSettings, Commands, Conn, CurrentTenant, IdempotencyKey, OwnedRun
from astraforge.api.errors import ApiError
from astraforge.api.idempotency import Claim, resumed
from astraforge.api.models import (
    NO_NUL,
    AttemptPublic,
    ErrorBody,
    RequestCreate,
    ReviewCreate,
    RunCancel,
    RunDetail,
    RunPublic,
    RunsPublic,
)
from astraforge.api.params import After
from astraforge.api.quotas import admit_sandboxes
from astraforge.ids import from_micros, iso, now_micros
from astraforge.processors.runs.guardrails import repository_allowed
from astraforge.processors.runs.state import attempt_sandbox_id
from astraforge.projections.queries import queries_for
from astraforge.sandbox.egress_rules import check_rules
from astraforge.sandbox.profile import SecurityProfile

router = APIRouter(tags=["runs"])
ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody},
          409: {"model": ErrorBody}, 422: {"model": ErrorBody}}  # fmt: skip
ENDED = ("merged", "rejected", "failed", "cancelled")
DETAIL_TYPES = ["run.requested", "review.decided", "diff.captured", "test.result", "patch.proposed",
                "guardrail.violated", "merge_request.opened", "artifact.stored", "snapshot.created"]  # fmt: skip


def _run_create(body: RequestCreate) -> dict:
    """The ``run.create`` payload (``RunCreate``) of a checked request."""
    return {
        "title": body.title or body.spec.strip().splitlines()[0][:200],
        "spec": body.spec,
        "agent": body.agent,
        "repo_url": body.repository,
        "base_ref": body.base_branch,
        "test_command": body.test_command,
        "source": "api",
        "alert_id": None,
        "writable_paths": body.writable_paths,
        "steps": [step.record() for step in body.steps] or _cli_step(body),
        "egress_allow": body.egress_allow,
        "model": body.model,
        "issue_url": None,
        "attachments": [a.model_dump() for a in body.attachments],
    }


def _cli_step(body: RequestCreate) -> list[dict]:
    """The cli agent's command template, carried as the run's one shell step (``executors/cli.py``)."""
    if body.command is None:
        return []
    return [{"kind": "shell", "command": body.command, "path": None, "content": None}]


@router.post("/v1/requests", status_code=201, response_model=RunPublic, operation_id="createRequest", responses=ERRORS)
async def create_request(
    body: RequestCreate,
    request: Request,
    tenant: CurrentTenant,
    settings: AppSettings,
    conn: Conn,
    commands: Commands,
    idempotency: IdempotencyKey,
) -> Response:
    if body.agent == "codex" and settings.agent_model_upstream not in settings.egress_platform_upstreams:
        upstream = settings.agent_model_upstream
        detail = f"agent codex needs the model gateway: the platform upstream {upstream} is not configured"
        raise ApiError(422, detail)
    try:  # the rules a sandbox create is held to: the run's sandbox is created with them
        check_rules(body.egress_allow, request.app.state.egress_policy, set(settings.egress_platform_upstreams))
    except ValueError as e:
        raise ApiError(422, str(e)) from e

    async def start(ids: dict, claim: Claim | None) -> tuple[int, RunPublic]:
        run_id = ids["run_id"]
        if not repository_allowed(settings.repo_allowlist, tenant, body.repository):
            detail = f"repository {body.repository} is not on the tenant's allowlist"
            await commands.refuse(tenant, run_id, "repository", detail, body.repository)
            raise ApiError(403, detail, code="repository_not_allowed", details={"run_id": run_id})
        if not resumed(claim):  # the run's sandbox counts against the tenant's quota like any other
            memory = {"memory_mb": settings.agent_memory_mb} if body.agent in ("codex", "cli") else {}
            ram_mb = SecurityProfile.with_overrides(memory).ram_mb
            sandbox = attempt_sandbox_id(run_id, 1)
            await admit_sandboxes(conn, settings, tenant, [sandbox], ram_mb, request.app.state.reservations)
        payload = _run_create(body)
        answer = await commands.run_command(tenant, run_id, "run.create", payload, ("run.requested",), progress=claim)
        at = iso(from_micros(answer.occurred_at if answer else now_micros()))
        return 201, RunPublic(
            id=run_id,
            state="requested",
            attempt=1,
            title=payload["title"],
            agent=body.agent,
            repository=body.repository,
            sandbox_id=None,
            reason=None,
            created_at=at,
            updated_at=at,
        )

    return await idempotency.run({"body": body}, {"run_id": new_run_id()}, start)


@router.get("/v1/runs", response_model=RunsPublic, operation_id="listRuns", responses=ERRORS)
async def list_runs(
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    after: After = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    state: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
    # PostgreSQL text holds no NUL: a filter with one was a 500 from the query
    repository: Annotated[str | None, Query(min_length=1, max_length=2048, pattern=NO_NUL)] = None,
    text: Annotated[
        str | None, Query(min_length=1, max_length=200, pattern=NO_NUL, description="In the title or request.")
    ] = None,
) -> RunsPublic:
    rows = await queries_for(settings.projection_schema).runs(conn, tenant, after, limit, state, repository, text)
    items = [RunPublic.from_row(r) for r in rows]
    return RunsPublic(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get("/v1/runs/{run_id}", response_model=RunDetail, operation_id="getRun", responses=ERRORS)
async def get_run(run: OwnedRun, tenant: CurrentTenant, conn: Conn, settings: AppSettings) -> RunDetail:
    """The run with its attempts (diffs, test results, patch, violations, review, merge request) and artifacts."""
    records = await queries_for(settings.projection_schema).answers(
        conn, tenant, run["run_id"], DETAIL_TYPES, None, None
    )
    attempts: dict[int, AttemptPublic] = {}
    artifacts = []
    guidance = None
    for r in records:
        p = r["payload"]
        if r["type"] in ("artifact.stored", "snapshot.created"):
            artifacts.append(p["artifact"])
            continue
        n = p.get("attempt", 1)
        a = attempts.setdefault(n, AttemptPublic(attempt=n))
        if r["type"] == "run.requested" and n > 1:
            a.guidance = guidance
        elif r["type"] == "review.decided":
            a.review = p
            guidance = p.get("comment") if p["decision"] == "rerun" else guidance
        elif r["type"] == "diff.captured":
            a.diffs.append(p)
        elif r["type"] == "test.result":
            a.test_results.append(p)
        elif r["type"] == "patch.proposed":
            a.patch = p
        elif r["type"] == "guardrail.violated":
            a.violations.append(p)
        elif r["type"] == "merge_request.opened":
            a.merge_request = p
    public = RunPublic.from_row(run)
    return RunDetail(
        **public.model_dump(), spec=run["spec"], attempts=[attempts[n] for n in sorted(attempts)], artifacts=artifacts
    )


@router.post(
    "/v1/runs/{run_id}/review", status_code=202, response_model=RunPublic, operation_id="reviewRun", responses=ERRORS
)
async def review_run(
    body: ReviewCreate, run: OwnedRun, tenant: CurrentTenant, commands: Commands, idempotency: IdempotencyKey
) -> Response:
    """Approve (push the branch, open the merge request), reject, or rerun with guidance (a new attempt)."""
    if run["state"] != "awaiting_review":
        raise ApiError(409, f"run {run['run_id']} is {run['state']}, not awaiting review")
    if body.decision == "rerun":
        type_, payload, answer = "run.rerun", {"reason": body.comment, "guidance": body.guidance}, ("run.requested",)
    else:
        type_ = f"run.{body.decision}"
        payload = {
            "decision": body.decision,
            "reviewer": f"tenant:{tenant}",
            "comment": body.comment,
            "attempt": run["attempt"],
        }
        answer = ("run.approved",) if body.decision == "approve" else ("run.rejected",)

    async def review(ids: dict, claim: Claim | None) -> tuple[int, RunPublic]:
        done = await commands.run_command(tenant, run["run_id"], type_, payload, answer, progress=claim)
        return 202, _after(run, done)

    return await idempotency.run({"body": body, "run": run["run_id"]}, {}, review)


@router.post(
    "/v1/runs/{run_id}/cancel", status_code=202, response_model=RunPublic, operation_id="cancelRun", responses=ERRORS
)
async def cancel_run(
    run: OwnedRun, tenant: CurrentTenant, commands: Commands, body: RunCancel | None = None
) -> RunPublic:
    """Cancel at any stage before approval: the agent's command and the sandbox are stopped (409 once
    approved: the merge under way ends the run)."""
    if run["state"] in ENDED or run["state"] == "approved":  # approved: being merged, the merge ends it
        raise ApiError(409, f"run {run['run_id']} is {run['state']}")
    payload = {"reason": (body.reason if body else None) or f"cancelled by tenant:{tenant}", "guidance": None}
    done = await commands.run_command(tenant, run["run_id"], "run.cancel", payload, ("run.cancelled",))
    return _after(run, done)


def _after(run: dict, done) -> RunPublic:
    """The run as the orchestrator's answer left it (or as projected, if the answer is still on its way)."""
    public = RunPublic.from_row(run)
    if done is not None:
        public.state, public.attempt = done.payload["state"], done.payload["attempt"]
        public.reason, public.updated_at = done.payload.get("reason"), iso(from_micros(done.occurred_at))
    return public
