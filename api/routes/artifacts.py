"""Artifacts (large output, snapshots) and forking sandboxes from a snapshot."""

import asyncio

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from astraforge.api.deps import AppSettings, Conn, CurrentTenant, Live
from astraforge.api.errors import ApiError
from astraforge.api.models import ErrorBody, ForkRequest, SandboxCreate, SandboxPublic
from astraforge.api.params import ArtifactId
from astraforge.api.quotas import admit_sandboxes
from astraforge.api.routes.sandboxes import _create, _owned_snapshot, check_spec, new_sandbox_id
from astraforge.api.streaming import artifact_response
from astraforge.errors import NotFound
from astraforge.projections.queries import ProjectionQueries
from astraforge.schemas import Envelope

router = APIRouter(tags=["artifacts"])
ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}}


@router.get(
    "/v1/artifacts/{artifact_id}",
    operation_id="downloadArtifact",
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(artifact_id: ArtifactId, request: Request, tenant: CurrentTenant, conn: Conn,
                            settings: AppSettings) -> Response:  # fmt: skip
    row = await ProjectionQueries(settings.projection_schema).artifact(conn, tenant, artifact_id)
    if row is None:
        raise ApiError(404, f"artifact {artifact_id} not found")
    try:
        return await artifact_response(request.app.state.artifacts, row, row["content_type"])
    except NotFound:
        raise ApiError(404, f"artifact {artifact_id} is gone from the store") from None


@router.delete("/v1/artifacts/{artifact_id}", status_code=202, operation_id="deleteArtifact", responses=ERRORS)
async def delete_artifact(artifact_id: ArtifactId, request: Request, tenant: CurrentTenant, conn: Conn,
                          settings: AppSettings) -> Response:  # fmt: skip
    """Delete an artifact (or snapshot): it answers 404 from then on and stops counting against the
    quota once projected; its bytes leave the store at the next sweep."""
    row = await ProjectionQueries(settings.projection_schema).artifact(conn, tenant, artifact_id)
    if row is None:
        raise ApiError(404, f"artifact {artifact_id} not found")
    deleted = Envelope(type="artifact.deleted", stream_id=row["stream_id"], tenant_id=tenant, actor=f"tenant:{tenant}",
                       payload={"artifact_id": artifact_id, "reason": "deleted"})  # fmt: skip
    await run_in_threadpool(request.app.state.producer.append_many, [deleted])
    return Response(status_code=202)


@router.post("/v1/snapshots/{snapshot_id}/fork", status_code=201, response_model=list[SandboxPublic],
             operation_id="forkSnapshot", responses=ERRORS)  # fmt: skip
async def fork(snapshot_id: ArtifactId, body: ForkRequest, request: Request, tenant: CurrentTenant, conn: Conn,
               settings: AppSettings, live: Live) -> list[SandboxPublic]:  # fmt: skip
    """Start `count` sandboxes, each restored from the snapshot; answers when all are ready."""
    spec = SandboxCreate(profile=body.profile, idle_timeout_s=body.idle_timeout_s, ttl_s=body.ttl_s,
                         restore_snapshot=snapshot_id)  # fmt: skip
    profile = check_spec(spec, request)
    await _owned_snapshot(conn, settings, tenant, snapshot_id)
    ids = [new_sandbox_id() for _ in range(body.count)]
    await admit_sandboxes(conn, settings, tenant, ids, profile.ram_mb, request.app.state.reservations)
    return list(await asyncio.gather(*(_create(request, live, settings, tenant, spec, True, sid) for sid in ids)))
