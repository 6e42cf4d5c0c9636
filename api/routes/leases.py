"""File leases on a shared sandbox (the blackboard): list, take, give up.

A lease says one holder is editing a file; while it lasts, anyone else asking for it gets a 409
naming the holder and the expiry. Leases live in PostgreSQL (``astraforge.leases`` says why), so
every API and processor instance sees the same ones; each grant, refusal and release is also a
record on the sandbox's stream. A conversation's agent takes its leases itself (on write_file /
edit_file); API clients (e.g. a toolkit agent) take theirs here, as ``tenant:<id>[/<holder>]``.
"""

import psycopg
from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from astraforge import leases
from astraforge.api.deps import AppSettings, Commands, CurrentTenant, OpenSandbox, OwnedSandbox
from astraforge.api.errors import ApiError
from astraforge.api.models import ErrorBody, LeaseCreate, LeasePublic, LeasesPublic
from astraforge.config import Settings
from astraforge.db import connect
from astraforge.ids import iso
from astraforge.schemas import Envelope

router = APIRouter(prefix="/v1/sandboxes", tags=["leases"])
ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody},
          422: {"model": ErrorBody}}  # fmt: skip


def _public(lease: leases.FileLease) -> LeasePublic:
    return LeasePublic(
        sandbox_id=lease.sandbox_id,
        path=lease.path,
        holder=lease.holder,
        acquired_at=iso(lease.acquired_at),
        expires_at=iso(lease.expires_at),
    )


def _in_db(settings: Settings, work):
    with connect(settings) as conn:
        return work(conn)


def _record(tenant: str, sandbox_id: str, type_: str, lease: leases.FileLease, actor: str) -> Envelope:
    payload = {"path": lease.path, "holder": lease.holder, "expires_at": lease.expires_micros, "requested_by": actor}
    return Envelope(type=type_, stream_id=sandbox_id, tenant_id=tenant, actor=actor, sandbox_id=sandbox_id,
                    payload=payload)  # fmt: skip


@router.get("/{sandbox_id}/leases", response_model=LeasesPublic, operation_id="listLeases", responses=ERRORS)
async def list_leases(sandbox: OwnedSandbox, tenant: CurrentTenant, settings: AppSettings) -> LeasesPublic:
    """The sandbox's file leases still in force (who holds which file, until when)."""
    held = await run_in_threadpool(_in_db, settings, lambda c: leases.held(c, tenant, sandbox["sandbox_id"]))
    return LeasesPublic(items=[_public(lease) for lease in held])


@router.post(
    "/{sandbox_id}/leases",
    status_code=201,
    response_model=LeasePublic,
    operation_id="takeLease",
    responses={**ERRORS, 429: {"model": ErrorBody}},
)
async def take_lease(
    body: LeaseCreate, sandbox: OpenSandbox, tenant: CurrentTenant, settings: AppSettings, commands: Commands
) -> LeasePublic:
    """Take a file's lease (or extend yours); 409 naming the holder while someone else's lasts."""
    sandbox_id = sandbox["sandbox_id"]
    holder = f"tenant:{tenant}" + (f"/{body.holder}" if body.holder else "")

    def take(conn: psycopg.Connection) -> leases.LeaseOutcome:
        return leases.acquire(conn, tenant, sandbox_id, body.path, holder, body.ttl_s)

    try:
        outcome = await run_in_threadpool(_in_db, settings, take)
    except leases.TooManyLeases as e:
        raise ApiError(429, str(e), code="too_many_leases") from None
    kind = "lease.acquired" if outcome.granted else "lease.refused"
    await commands.append([_record(tenant, sandbox_id, kind, outcome.lease, holder)])
    if not outcome.granted:
        raise ApiError(
            409,
            outcome.refusal(),
            code="lease_held",
            details={"holder": outcome.lease.holder, "expires_at": iso(outcome.lease.expires_at)},
        )
    return _public(outcome.lease)


@router.delete("/{sandbox_id}/leases", status_code=204, operation_id="releaseLease", responses=ERRORS)
async def release_lease(
    sandbox: OwnedSandbox,
    tenant: CurrentTenant,
    settings: AppSettings,
    commands: Commands,
    path: str = Query(min_length=1, max_length=4096, pattern=r"^/[^\x00]*$"),
    holder: str | None = Query(default=None, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$"),
) -> None:
    """Give up your lease on ``path`` (404 if you hold none)."""
    sandbox_id = sandbox["sandbox_id"]
    who = f"tenant:{tenant}" + (f"/{holder}" if holder else "")
    released = await run_in_threadpool(_in_db, settings, lambda c: leases.release(c, sandbox_id, path, who))
    if released is None:
        raise ApiError(404, f"{who} holds no lease on {path}")
    await commands.append([_record(tenant, sandbox_id, "lease.released", released, who)])
