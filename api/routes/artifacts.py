"""Artifacts (large output, snapshots) and forking sandboxes from a snapshot."""

from fastapi import APIRouter, Request, Response

from astraforge.api.commands import new_sandbox_id
from astraforge.api.deps import (
    AppSettings,
    Commands,
    Conn,
    CurrentTenant,
    IdempotencyKey,
    OwnedArtifact,
    OwnedSnapshot,
)
from astraforge.api.errors import ApiError
from astraforge.api.idempotency import Claim, resumed
from astraforge.api.models import ErrorBody, ForkRequest, SandboxCreate, SandboxPublic
from astraforge.api.quotas import admit_sandboxes
from astraforge.api.routes.sandboxes import CREATE_WAIT_S, check_spec, requested_sandbox
from astraforge.api.streaming import artifact_response
from astraforge.errors import NotFound
from astraforge.schemas import Envelope

router = APIRouter(tags=["artifacts"])
ERRORS = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody},
          409: {"model": ErrorBody}, 422: {"model": ErrorBody}}  # fmt: skip


@router.get(
    "/v1/artifacts/{artifact_id}",
    operation_id="downloadArtifact",
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(artifact: OwnedArtifact, request: Request) -> Response:
    try:
        return await artifact_response(request.app.state.artifacts, artifact, artifact["content_type"])
    except NotFound:
        raise ApiError(404, f"artifact {artifact['artifact_id']} is gone from the store") from None


@router.delete("/v1/artifacts/{artifact_id}", status_code=202, operation_id="deleteArtifact", responses=ERRORS)
async def delete_artifact(artifact: OwnedArtifact, tenant: CurrentTenant, commands: Commands) -> Response:
    """Delete an artifact (or snapshot): it answers 404 from then on and stops counting against the
    quota once projected; its bytes leave the store at the next sweep."""
    payload = {"artifact_id": artifact["artifact_id"], "reason": "deleted"}
    deleted = Envelope(
        type="artifact.deleted",
        stream_id=artifact["stream_id"],
        tenant_id=tenant,
        actor=f"tenant:{tenant}",
        payload=payload,
    )
    await commands.append([deleted])
    return Response(status_code=202)


@router.post(
    "/v1/snapshots/{snapshot_id}/fork",
    status_code=201,
    response_model=list[SandboxPublic],
    operation_id="forkSnapshot",
    responses=ERRORS,
)
async def fork(
    snapshot: OwnedSnapshot,
    body: ForkRequest,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    commands: Commands,
    idempotency: IdempotencyKey,
) -> Response:
    """Start `count` sandboxes, each restored from the snapshot; answers when all are ready."""
    create = SandboxCreate(
        profile=body.profile,
        idle_timeout_s=body.idle_timeout_s,
        ttl_s=body.ttl_s,
        restore_snapshot=snapshot["artifact_id"],
    )
    profile = check_spec(create, request)
    spec = requested_sandbox(create, profile, settings.sandbox_image)

    async def start(ids: dict, claim: Claim | None) -> tuple[int, list[SandboxPublic]]:
        sandbox_ids = ids["sandbox_ids"]
        if not resumed(claim):
            await admit_sandboxes(conn, settings, tenant, sandbox_ids, profile.ram_mb, request.app.state.reservations)
        created = await commands.create_sandboxes(tenant, spec, sandbox_ids, CREATE_WAIT_S, claim)
        request.app.state.reservations.appended(tenant, sandbox_ids)
        return 201, created

    ids = {"sandbox_ids": [new_sandbox_id() for _ in range(body.count)]}
    return await idempotency.run({"body": body}, ids, start)
