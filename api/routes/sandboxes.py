"""Sandboxes: create, list, get, heartbeat, stop, delete, exec, files.

Routes check the request and the tenant's ownership (``api.deps``), then hand the command to
``api.commands`` (append it, await the processor's answer) and never touch the read models.
POSTs that create or run something (and the file upload) honour an ``Idempotency-Key``
(``api.idempotency``): whatever they append happens inside ``Idempotent.run``, with the ids it
hands out, so a retry answers the first attempt's result instead of doing it again. The sandbox
processor is the one writer of a sandbox's lifecycle (it writes ``sandbox.requested`` from the
create command).
"""

import hashlib
import re
from typing import Annotated, BinaryIO
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from astraforge import leases
from astraforge.api.commands import command, new_sandbox_id
from astraforge.api.deps import (
    SANDBOX_ENDED,
    AppSettings,
    Commands,
    Conn,
    CurrentTenant,
    IdempotencyKey,
    OpenSandbox,
    OwnedSandbox,
    ensure_open,
    owned_sandbox,
    require_snapshot,
    until_projected,
)
from astraforge.api.errors import ApiError
from astraforge.api.idempotency import Claim, resumed
from astraforge.api.models import (
    ErrorBody,
    ExecAccepted,
    ExecRequest,
    ExecResult,
    FileResult,
    SandboxCreate,
    SandboxesPublic,
    SandboxPublic,
    SnapshotPublic,
)
from astraforge.api.params import After, CommandId, SandboxId
from astraforge.api.quotas import admit_artifact_bytes, admit_exec, admit_exec_in, admit_sandboxes
from astraforge.api.streaming import artifact_response
from astraforge.artifacts import MAX_INLINE_BYTES, spool
from astraforge.ids import iso, new_id
from astraforge.projections.queries import queries_for
from astraforge.sandbox.egress_rules import check_rules
from astraforge.sandbox.profile import SecurityProfile
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])
ERRORS = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody},
          409: {"model": ErrorBody}, 422: {"model": ErrorBody}}  # fmt: skip
CREATE_WAIT_S = 60.0
EXEC_ANSWER_MARGIN_S = 30.0  # past the command's own timeout: the sandbox reports it, then we answer


def _public(row: dict) -> SandboxPublic:
    return SandboxPublic(
        id=row["sandbox_id"],
        state=row["state"],
        image=row["image"],
        provider=row["provider"],
        reason=row["reason"],
        created_at=iso(row["created_at"]),
        updated_at=iso(row["updated_at"]),
    )


@router.post("", status_code=201, response_model=SandboxPublic, operation_id="createSandbox", responses=ERRORS)
async def create_sandbox(
    body: SandboxCreate,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    commands: Commands,
    idempotency: IdempotencyKey,
    wait: Annotated[bool, Query(description="Answer once the sandbox is ready (or failed).")] = True,
) -> Response:
    profile = check_spec(body, request)
    if body.restore_snapshot:
        await require_snapshot(conn, settings, tenant, body.restore_snapshot)
    spec = requested_sandbox(body, profile, body.image or settings.sandbox_image)

    async def create(ids: dict, claim: Claim | None) -> tuple[int, SandboxPublic]:
        sandbox_id = ids["sandbox_id"]
        if not resumed(claim):
            await admit_sandboxes(conn, settings, tenant, [sandbox_id], profile.ram_mb, request.app.state.reservations)
        wait_s = CREATE_WAIT_S if wait else None
        (created,) = await commands.create_sandboxes(tenant, spec, [sandbox_id], wait_s, claim)
        request.app.state.reservations.appended(tenant, [sandbox_id])
        return 201, created

    return await idempotency.run({"body": body, "wait": wait}, {"sandbox_id": new_sandbox_id()}, create)


def check_spec(body: SandboxCreate, request: Request) -> SecurityProfile:
    """Limits within bounds and egress rules that pass the create check (``egress_rules``: no
    wildcard over a public suffix, no refused address, no platform upstream) and an image the
    operator allows (``Settings.sandbox_images``), or a 422 naming it."""
    settings = request.app.state.settings
    if body.image and body.image not in settings.allowed_images:
        raise ApiError(422, f"image {body.image} is not allowed (allowed: {', '.join(settings.allowed_images)})")
    platform = set(settings.egress_platform_upstreams)
    try:
        profile = SecurityProfile.with_overrides(body.profile)
        check_rules(body.egress_allow, request.app.state.egress_policy, platform)
    except ValueError as e:  # ValidationError is a ValueError too
        raise ApiError(422, str(e)) from e
    return profile


def requested_sandbox(body: SandboxCreate, profile: SecurityProfile, image: str) -> RequestedSandbox:
    """The typed spec of a create request ``check_spec`` passed: the limits it overrides, as the
    validated ``profile`` holds them (``cpus: 2`` is ``2.0``)."""
    return RequestedSandbox(
        image=image,
        limits={name: getattr(profile, name) for name in body.profile},
        idle_timeout_s=body.idle_timeout_s,
        ttl_s=body.ttl_s,
        egress_allow=tuple(body.egress_allow),
        restore_snapshot=body.restore_snapshot,
    )


@router.post(
    "/{sandbox_id}/snapshots",
    status_code=201,
    response_model=SnapshotPublic,
    operation_id="snapshotSandbox",
    responses=ERRORS,
)
async def snapshot(
    sandbox: OwnedSandbox,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    commands: Commands,
    idempotency: IdempotencyKey,
) -> Response:
    """Snapshot /workspace (gzip'd tar, sha256) into the artifact store."""
    sandbox_id = sandbox["sandbox_id"]

    async def take(ids: dict, claim: Claim | None) -> tuple[int, SnapshotPublic]:
        if not resumed(claim):
            ensure_open(sandbox)
            await admit_artifact_bytes(conn, settings, tenant, 1)  # a tenant at its quota takes no more snapshots
        snapshot_id = ids["snapshot_id"]
        record = command(tenant, sandbox_id, "sandbox.snapshot", {"snapshot_id": snapshot_id, "name": None})
        ref = (await commands.snapshot(record, claim)).payload["artifact"]
        return 201, SnapshotPublic(id=snapshot_id, sandbox_id=sandbox_id, size=ref["size"], sha256=ref["sha256"])

    return await idempotency.run({}, {"snapshot_id": new_id()}, take)


@router.get("", response_model=SandboxesPublic, operation_id="listSandboxes", responses=ERRORS)
async def list_sandboxes(
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    after: After = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SandboxesPublic:
    """The tenant's sandboxes by id, from the projection; one this API process created that belongs
    on the page and is not projected yet is waited for (create-then-list shows it)."""
    queries = queries_for(settings.projection_schema)
    admitted = request.app.state.reservations.awaited(tenant)

    def missing(rows: list[dict]) -> bool:
        shown = {row["sandbox_id"] for row in rows}
        last = rows[-1]["sandbox_id"] if len(rows) == limit else None
        return any(key > after and key not in shown and (last is None or key < last) for key in admitted)

    rows = await until_projected(lambda: queries.sandboxes(conn, tenant, after, limit), missing)
    items = [_public(r) for r in rows]
    return SandboxesPublic(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get("/{sandbox_id}", response_model=SandboxPublic, operation_id="getSandbox", responses=ERRORS)
async def get_sandbox(sandbox: OwnedSandbox) -> SandboxPublic:
    return _public(sandbox)


async def _control(
    sandbox: dict, tenant: str, commands, idempotency, type_: str, reason: str | None, payload: dict | None = None
) -> Response:
    """Append a control command (no answer awaited): 202, or 409 once the sandbox has ended."""

    async def send(ids: dict, claim: Claim | None) -> tuple[int, None]:
        if not resumed(claim):
            if sandbox["state"] in SANDBOX_ENDED:
                raise ApiError(409, f"sandbox {sandbox['sandbox_id']} is {sandbox['state']}")
            record = command(tenant, sandbox["sandbox_id"], type_, payload or {"reason": reason})
            await commands.append([record], claim)
        return 202, None

    return await idempotency.run({}, {}, send)


@router.post("/{sandbox_id}/heartbeat", status_code=202, operation_id="heartbeatSandbox", responses=ERRORS)
async def heartbeat(
    request: Request, sandbox: OwnedSandbox, tenant: CurrentTenant, commands: Commands, idempotency: IdempotencyKey
):
    """Extend the idle deadline (at most one record per sandbox per second: the rest change nothing)."""
    if sandbox["state"] not in SANDBOX_ENDED and not request.app.state.heartbeats.due(sandbox["sandbox_id"]):
        return Response(status_code=202)
    return await _control(sandbox, tenant, commands, idempotency, "sandbox.heartbeat", None)


@router.post("/{sandbox_id}/stop", status_code=202, operation_id="stopSandbox", responses=ERRORS)
async def stop(sandbox: OwnedSandbox, tenant: CurrentTenant, commands: Commands, idempotency: IdempotencyKey):
    return await _control(sandbox, tenant, commands, idempotency, "sandbox.stop", "stop")


@router.delete("/{sandbox_id}", status_code=202, operation_id="deleteSandbox", responses=ERRORS)
async def delete(sandbox: OwnedSandbox, tenant: CurrentTenant, commands: Commands, idempotency: IdempotencyKey):
    return await _control(sandbox, tenant, commands, idempotency, "sandbox.delete", "delete")


@router.post(
    "/{sandbox_id}/exec", response_model=ExecResult | ExecAccepted, operation_id="execInSandbox", responses=ERRORS
)
async def exec_command(
    sandbox_id: SandboxId,
    body: ExecRequest,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    commands: Commands,
    idempotency: IdempotencyKey,
) -> Response:
    """Run a command. Sync answers with the whole result; async answers with a command id whose
    output follows on the sandbox's stream (`/v1/streams/{sandbox_id}/events/sse`). A file someone
    else has leased (`/leases`) that the command changes is put back when it ends, and the answer's
    `error` names it and its holder (`lease_violated: ...`); name yourself with `X-Lease-Holder` to
    change files you leased under that name."""
    # with a key, the sandbox is checked before the key is claimed; without one (the hot path), its
    # ownership and the tenant's exec quota are read in one statement when the command is admitted
    keyed = await owned_sandbox(sandbox_id, tenant, conn, settings, request) if idempotency.key else None
    actor = lease_caller(tenant, request)
    argv, shell = (body.command, None) if isinstance(body.command, list) else ([], body.command)
    if not argv and not shell:
        raise ApiError(422, "command must not be empty")
    wait_s = body.timeout_sec + EXEC_ANSWER_MARGIN_S

    async def run(ids: dict, claim: Claim | None) -> tuple[int, ExecResult | ExecAccepted]:
        command_id = ids["command_id"]
        record = command(
            tenant,
            sandbox_id,
            "sandbox.exec",
            {
                "command_id": command_id,
                "argv": argv,
                "shell": shell,
                "cwd": body.cwd,
                "env": body.env,
                "timeout_s": body.timeout_sec,
                "async_": body.run_async,
            },
            actor,
        )
        if not resumed(claim):
            await _admit_exec(request, keyed, sandbox_id, tenant, conn, settings, command_id)
        if not body.run_async:
            return 200, await commands.exec(record, wait_s, claim)
        if not resumed(claim):
            await commands.append([record], claim)
        return 200, ExecAccepted(command_id=command_id, stream_id=sandbox_id)

    return await idempotency.run({"body": body}, {"command_id": new_id()}, run)


async def _admit_exec(
    request: Request,
    sandbox: dict | None,
    sandbox_id: str,
    tenant: str,
    conn: Conn,
    settings: AppSettings,
    command_id: str,
) -> None:
    """404 / 409 / 429 in that order, else the command is admitted (held until projected). Unless
    the caller already read the sandbox (``sandbox``), one statement checks ownership and quota; a
    sandbox it does not show (unknown, or admitted here and not projected yet) goes the long way."""
    held = request.app.state.reservations
    if sandbox is None and await admit_exec_in(conn, settings, tenant, sandbox_id, command_id, held, ensure_open):
        return
    sandbox = sandbox or await owned_sandbox(sandbox_id, tenant, conn, settings, request)
    ensure_open(sandbox)
    await admit_exec(conn, settings, tenant, command_id, held)


PathText = Annotated[str, Path(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]


async def file_path(request: Request, path: PathText) -> str:
    """The file path of the URL, refused (422) when its %-escapes are not UTF-8: Starlette decodes
    those to U+FFFD, and a write went to a file of another name, answered 200."""
    try:
        unquote_to_bytes(request.scope.get("raw_path") or b"").decode()
    except UnicodeDecodeError:
        raise ApiError(422, "the path's %-escapes are not UTF-8") from None
    return path


FilePath = Annotated[str, Depends(file_path)]


async def _body_within(request: Request, limit: int) -> tuple[BinaryIO, str]:
    """The request body in a spool (on disk past 1 MiB) and its sha256, refused with 413 as soon as
    it is known to pass ``limit``: from its Content-Length before a byte is read, else while it
    streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"files over {limit} bytes are refused (this one declares {declared})")
    body, digest = spool(), hashlib.sha256()
    try:
        async for chunk in request.stream():
            if body.tell() + len(chunk) > limit:
                raise ApiError(413, f"files over {limit} bytes are refused")
            body.write(chunk)  # page cache past 1 MiB: no wait worth a thread
            digest.update(chunk)
    except BaseException:
        body.close()
        raise
    return body, digest.hexdigest()


@router.put("/{sandbox_id}/files/{path:path}", response_model=FileResult, operation_id="uploadFile", responses=ERRORS)
async def upload(
    sandbox: OwnedSandbox,
    path: FilePath,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    commands: Commands,
    idempotency: IdempotencyKey,
) -> Response:
    """Write the request body to `path` (relative paths are under /workspace). A file another holder
    has leased (`/leases`) answers 409 naming it; name yourself with `X-Lease-Holder` to write a file
    you leased under that name."""
    sandbox_id = sandbox["sandbox_id"]
    ensure_open(sandbox)  # before reading a byte of the body
    actor = lease_caller(tenant, request)
    await check_lease(conn, tenant, sandbox_id, path, actor)
    with request.app.state.uploads.take(tenant, settings.quota_concurrent_uploads):
        body, sha256 = await _body_within(request, settings.max_file_bytes)

        async def write(ids: dict, claim: Claim | None) -> tuple[int, FileResult]:
            payload = {"request_id": ids["request_id"], "path": path, "content": None, "artifact": None, "mode": 0o644}
            stored = []
            if not resumed(claim):
                size = body.seek(0, 2)
                if size > MAX_INLINE_BYTES:  # too big for a record: the bytes go through the artifact store
                    await admit_artifact_bytes(conn, settings, tenant, size)
                    store = request.app.state.artifacts
                    body.seek(0)
                    payload["artifact"] = await run_in_threadpool(store.put_file, tenant, body, BINARY, path)
                    # the stored bytes are an artifact like any other: listed, counted against the quota, deletable
                    stored = [
                        command(
                            tenant, sandbox_id, "artifact.stored", {"artifact": payload["artifact"], "command_id": None}
                        )
                    ]
                else:
                    body.seek(0)
                    payload["content"] = body.read()
            record = command(tenant, sandbox_id, "sandbox.file.write", payload, actor)
            done = await commands.file_op(record, "file.written", stored, claim)
            return 200, FileResult(path=done.payload["path"], size=done.payload["size"], sha256=done.payload["sha256"])

        with body:
            return await idempotency.run({"sha256": sha256}, {"request_id": new_id()}, write)


BINARY = "application/octet-stream"


HOLDER_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,200}")


def lease_caller(tenant: str, request: Request) -> str:
    """Who the caller is to leases (and the records it appends): ``tenant:<id>``, or
    ``tenant:<id>/<holder>`` with an ``X-Lease-Holder`` header (as the lease routes name holders)."""
    holder = request.headers.get("x-lease-holder")
    if holder is None:
        return f"tenant:{tenant}"
    if not HOLDER_NAME.fullmatch(holder):
        raise ApiError(422, "X-Lease-Holder must be 1-200 characters of A-Z a-z 0-9 . _ : @ -")
    return f"tenant:{tenant}/{holder}"


async def check_lease(conn: Conn, tenant: str, sandbox_id: str, path: str, caller: str) -> None:
    """409 if someone other than the caller (``tenant:<id>[/<holder>]``) holds the file's lease."""
    absolute = leases.canonical(path)
    held = await (await conn.execute(leases.HELD, (sandbox_id, absolute))).fetchone()
    if held is not None and held["holder"] != caller:
        refused = leases.LeaseOutcome(False, leases.FileLease(sandbox_id, absolute, held["holder"], held["acquired_at"],
                                                               held["expires_at"]))  # fmt: skip
        raise ApiError(409, refused.refusal(), code="lease_held",
                       details={"holder": held["holder"], "expires_at": iso(held["expires_at"])})  # fmt: skip


@router.get(
    "/{sandbox_id}/files/{path:path}",
    operation_id="downloadFile",
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
async def download(
    sandbox: OpenSandbox,
    path: FilePath,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    commands: Commands,
    export: Annotated[bool, Query(description="Store the file as an artifact and answer its id.")] = False,
) -> Response:
    sandbox_id = sandbox["sandbox_id"]
    record = command(tenant, sandbox_id, "sandbox.file.read", {"request_id": new_id(), "path": path})
    done = await commands.file_op(record, "file.read")
    ref = done.payload["artifact"]
    store = request.app.state.artifacts
    if export:
        if ref is None:
            await admit_artifact_bytes(conn, settings, tenant, done.payload["size"])
            ref = await run_in_threadpool(store.put, tenant, done.payload["content"] or b"", BINARY, path)
            await commands.append(
                [command(tenant, sandbox_id, "artifact.stored", {"artifact": ref, "command_id": None})]
            )
        return JSONResponse({"artifact_id": ref["artifact_id"], "size": ref["size"], "sha256": ref["sha256"]})
    if ref is not None:  # a plain download: the copy the processor stored is deleted once it is sent
        response = await artifact_response(store, ref, BINARY)
        deleted = Envelope(
            type="artifact.deleted",
            stream_id=sandbox_id,
            tenant_id=tenant,
            actor=f"tenant:{tenant}",
            payload={"artifact_id": ref["artifact_id"], "reason": "transient"},
        )
        response.background = BackgroundTask(commands.append, [deleted])
        return response
    data = done.payload["content"] or b""
    return Response(data, media_type=BINARY, headers={"X-Sha256": done.payload["sha256"]})


@router.post("/{sandbox_id}/exec/{command_id}/cancel", status_code=202, operation_id="cancelExec", responses=ERRORS)
async def cancel_exec(
    sandbox: OwnedSandbox,
    command_id: CommandId,
    tenant: CurrentTenant,
    commands: Commands,
    idempotency: IdempotencyKey,
) -> Response:
    """Kill a running command's whole process tree; its exec.finished says cancelled."""
    ensure_open(sandbox)
    return await _control(
        sandbox, tenant, commands, idempotency, "sandbox.exec.cancel", None, {"command_id": command_id}
    )
