"""Sandboxes: create, list, get, heartbeat, stop, delete, exec, files.

Writes append commands and never touch the read models: the sandbox processor is the one writer
of a sandbox's lifecycle (it writes ``sandbox.requested`` from the create command). Calls subscribe
to the sandbox's stream *before* appending, then answer from the processor's facts on the live tail
(a create: ``sandbox.requested``, or with ``wait`` ``sandbox.ready``/``failed``).
"""

import asyncio
from collections.abc import Callable
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from astraforge.api.deps import AppSettings, Conn, CurrentTenant, Live
from astraforge.api.errors import ApiError
from astraforge.api.live import LiveTail, Subscriber
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
    iso,
)
from astraforge.api.params import After, CommandId, SandboxId
from astraforge.api.quotas import admit_artifact_bytes, admit_exec, admit_sandboxes
from astraforge.api.streaming import artifact_response
from astraforge.artifacts import MAX_INLINE_BYTES, spool
from astraforge.ids import from_micros, new_id
from astraforge.projections.queries import ProjectionQueries
from astraforge.sandbox.egress_rules import check_rules
from astraforge.sandbox.profile import SecurityProfile
from astraforge.schemas import Envelope

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])
ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody}}
BINARY = "application/octet-stream"
ENDED = ("terminated", "failed")


def _public(row: dict) -> SandboxPublic:
    return SandboxPublic(
        id=row["sandbox_id"], state=row["state"], image=row["image"], provider=row["provider"], reason=row["reason"],
        created_at=iso(row["created_at"]), updated_at=iso(row["updated_at"]),
    )  # fmt: skip


async def _owned(conn, settings, tenant: str, sandbox_id: str) -> dict:
    row = await ProjectionQueries(settings.projection_schema).sandbox(conn, tenant, sandbox_id)
    if row is None:
        raise ApiError(404, f"sandbox {sandbox_id} not found")
    return row


async def _append(request: Request, envelopes: list[Envelope]) -> None:
    await run_in_threadpool(request.app.state.producer.append_many, envelopes)


async def _until(sub: Subscriber, match: Callable[[Envelope], bool], timeout: float) -> Envelope:
    async with asyncio.timeout(timeout):
        while True:
            item = await sub.next()
            if item is None:
                raise ApiError(503, "fell behind the live stream; retry")
            if match(item.envelope):
                return item.envelope


def _command(tenant: str, sandbox_id: str, type_: str, payload: dict) -> Envelope:
    return Envelope(type=type_, stream_id=sandbox_id, tenant_id=tenant, actor=f"tenant:{tenant}",
                    sandbox_id=sandbox_id, payload=payload)  # fmt: skip


@router.post("", status_code=201, response_model=SandboxPublic, operation_id="createSandbox", responses=ERRORS)
async def create_sandbox(
    body: SandboxCreate,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    live: Live,
    wait: Annotated[bool, Query(description="Answer once the sandbox is ready (or failed).")] = True,
) -> SandboxPublic:
    profile = check_spec(body, request)
    if body.restore_snapshot:
        await _owned_snapshot(conn, settings, tenant, body.restore_snapshot)
    sandbox_id = new_sandbox_id()
    await admit_sandboxes(conn, settings, tenant, [sandbox_id], profile.ram_mb, request.app.state.reservations)
    return await _create(request, live, settings, tenant, body, wait, sandbox_id)


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


async def _owned_snapshot(conn, settings, tenant: str, snapshot_id: str) -> dict:
    row = await ProjectionQueries(settings.projection_schema).artifact(conn, tenant, snapshot_id)
    if row is None:
        raise ApiError(404, f"snapshot {snapshot_id} not found")
    return row


def new_sandbox_id() -> str:
    return f"sb-{new_id().replace('-', '')}"


async def _create(
    request, live: LiveTail, settings, tenant: str, body: SandboxCreate, wait: bool, sandbox_id: str
) -> SandboxPublic:
    image = body.image or settings.sandbox_image
    create = _command(tenant, sandbox_id, "sandbox.create", {
        "image": image, "profile": {k: str(v) for k, v in body.profile.items()}, "cpus": None,
        "memory_mb": None, "pids": None, "idle_timeout_s": body.idle_timeout_s, "ttl_s": body.ttl_s,
        "egress_allow": body.egress_allow, "restore_snapshot": body.restore_snapshot,
    })  # fmt: skip
    answers = ("sandbox.ready", "sandbox.failed") if wait else ("sandbox.requested",)
    sub = live.subscribe(sandbox_id, tenant)
    try:
        await _append(request, [create])
        state, reason, provider = "requested", None, None
        try:
            done = await _until(sub, lambda e: e.type in answers, timeout=60 if wait else 10)
            state, reason, provider = done.payload["state"], done.payload["reason"], done.payload["provider"]
        except TimeoutError:  # still on its way: the caller follows the stream or polls GET
            state = "provisioning" if wait else "requested"
    finally:
        live.unsubscribe(sub)
    at = iso(from_micros(create.occurred_at))
    return SandboxPublic(id=sandbox_id, state=state, image=image, provider=provider, reason=reason,
                         created_at=at, updated_at=at)  # fmt: skip


@router.post("/{sandbox_id}/snapshots", status_code=201, response_model=SnapshotPublic,
             operation_id="snapshotSandbox", responses=ERRORS)  # fmt: skip
async def snapshot(
    sandbox_id: SandboxId, request: Request, tenant: CurrentTenant, conn: Conn, settings: AppSettings, live: Live
) -> SnapshotPublic:
    """Snapshot /workspace (gzip'd tar, sha256) into the artifact store."""
    await _live_sandbox(conn, settings, tenant, sandbox_id)
    await admit_artifact_bytes(conn, settings, tenant, 1)  # a tenant at its quota takes no more snapshots
    snapshot_id = new_id()
    command = _command(tenant, sandbox_id, "sandbox.snapshot", {"snapshot_id": snapshot_id, "name": None})
    sub = live.subscribe(sandbox_id, tenant)
    try:
        await _append(request, [command])
        outcome = ("snapshot.created", "snapshot.failed")
        match = lambda e: e.type in outcome and e.payload["snapshot_id"] == snapshot_id  # noqa: E731
        try:
            done = await _until(sub, match, timeout=300)
        except TimeoutError:
            raise ApiError(504, "the snapshot did not complete in time", code="timeout") from None
    finally:
        live.unsubscribe(sub)
    if done.type == "snapshot.failed":
        raise ApiError(SANDBOX_ERRORS.get(done.payload["error"].partition(":")[0], 422), done.payload["error"])
    ref = done.payload["artifact"]
    return SnapshotPublic(id=snapshot_id, sandbox_id=sandbox_id, size=ref["size"], sha256=ref["sha256"])


@router.get("", response_model=SandboxesPublic, operation_id="listSandboxes", responses=ERRORS)
async def list_sandboxes(
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    after: After = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SandboxesPublic:
    rows = await ProjectionQueries(settings.projection_schema).sandboxes(conn, tenant, after, limit)
    items = [_public(r) for r in rows]
    return SandboxesPublic(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get("/{sandbox_id}", response_model=SandboxPublic, operation_id="getSandbox", responses=ERRORS)
async def get_sandbox(sandbox_id: SandboxId, tenant: CurrentTenant, conn: Conn, settings: AppSettings) -> SandboxPublic:
    return _public(await _owned(conn, settings, tenant, sandbox_id))


async def _control(request, conn, settings, tenant, sandbox_id, type_: str, reason: str | None) -> Response:
    row = await _owned(conn, settings, tenant, sandbox_id)
    if row["state"] in ENDED:
        raise ApiError(409, f"sandbox {sandbox_id} is {row['state']}")
    await _append(request, [_command(tenant, sandbox_id, type_, {"reason": reason})])
    return Response(status_code=202)


@router.post("/{sandbox_id}/heartbeat", status_code=202, operation_id="heartbeatSandbox", responses=ERRORS)
async def heartbeat(sandbox_id: SandboxId, request: Request, tenant: CurrentTenant, conn: Conn, settings: AppSettings):
    """Extend the idle deadline."""
    return await _control(request, conn, settings, tenant, sandbox_id, "sandbox.heartbeat", None)


@router.post("/{sandbox_id}/stop", status_code=202, operation_id="stopSandbox", responses=ERRORS)
async def stop(sandbox_id: SandboxId, request: Request, tenant: CurrentTenant, conn: Conn, settings: AppSettings):
    return await _control(request, conn, settings, tenant, sandbox_id, "sandbox.stop", "stop")


@router.delete("/{sandbox_id}", status_code=202, operation_id="deleteSandbox", responses=ERRORS)
async def delete(sandbox_id: SandboxId, request: Request, tenant: CurrentTenant, conn: Conn, settings: AppSettings):
    return await _control(request, conn, settings, tenant, sandbox_id, "sandbox.delete", "delete")


async def _live_sandbox(conn, settings, tenant, sandbox_id) -> None:
    row = await _owned(conn, settings, tenant, sandbox_id)
    if row["state"] in ENDED or row["state"] == "stopping":
        raise ApiError(409, f"sandbox {sandbox_id} is {row['state']}")


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
    live: Live,
) -> ExecResult | ExecAccepted:
    """Run a command. Sync answers with the whole result; async answers with a command id whose
    output follows on the sandbox's stream (`/v1/streams/{sandbox_id}/events/sse`)."""
    await _live_sandbox(conn, settings, tenant, sandbox_id)
    argv, shell = (body.command, None) if isinstance(body.command, list) else ([], body.command)
    if not argv and not shell:
        raise ApiError(422, "command must not be empty")
    command_id = new_id()
    await admit_exec(conn, settings, tenant, command_id, request.app.state.reservations)
    command = _command(tenant, sandbox_id, "sandbox.exec", {
        "command_id": command_id, "argv": argv, "shell": shell, "cwd": body.cwd, "env": body.env,
        "timeout_s": body.timeout_sec, "async_": body.run_async,
    })  # fmt: skip
    if body.run_async:
        await _append(request, [command])
        return ExecAccepted(command_id=command_id, stream_id=sandbox_id)
    return await _run_sync(request, live, tenant, sandbox_id, command, body.timeout_sec)


async def _run_sync(request, live: LiveTail, tenant, sandbox_id, command: Envelope, timeout: float) -> ExecResult:
    command_id = command.payload["command_id"]
    sub = live.subscribe(sandbox_id, tenant)
    chunks: list[tuple[str, bytes]] = []

    artifact: list[str] = []

    def collect(e: Envelope) -> bool:
        if e.payload.get("command_id") != command_id:
            return False
        if e.type == "exec.output":
            chunks.append((e.payload["stream"], e.payload["data"]))
            if e.payload["artifact"]:
                artifact.append(e.payload["artifact"]["artifact_id"])
        return e.type == "exec.finished"

    try:
        await _append(request, [command])
        try:
            done = (await _until(sub, collect, timeout=timeout + 30)).payload
        except TimeoutError:
            raise ApiError(504, f"command {command_id} did not finish in time; follow it on the stream") from None
    finally:
        live.unsubscribe(sub)

    def text(streams: tuple[str, ...]) -> str:
        return b"".join(d for s, d in chunks if s in streams).decode(errors="replace")

    return ExecResult(
        command_id=command_id, exit_code=done["exit_code"], stdout=text(("stdout",)), stderr=text(("stderr",)),
        output=text(("stdout", "stderr")), duration_ms=done["duration_ms"], timed_out=done["timed_out"],
        cancelled=done["cancelled"], truncated=done["truncated"], error=done["error"],
        output_artifact=artifact[0] if artifact else None,
    )  # fmt: skip


SANDBOX_ERRORS = {"not_found": 404, "forbidden_path": 403, "unavailable": 503, "too_large": 413, "quota_exceeded": 429}
FilePath = Annotated[str, Path(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]


async def _file_op(request, live, tenant, sandbox_id, command: Envelope, answer: str, facts=()) -> Envelope:
    """Append ``facts`` (records of what the API itself did) and the command; await the answer."""
    rid = command.payload["request_id"]
    sub = live.subscribe(sandbox_id, tenant)
    try:
        await _append(request, [*facts, command])
        done = await _until(sub, lambda e: e.type == answer and e.payload.get("request_id") == rid, timeout=60)
    except TimeoutError:
        raise ApiError(504, f"the sandbox did not answer {command.type} in time", code="timeout") from None
    finally:
        live.unsubscribe(sub)
    error = done.payload.get("error")
    if error:
        raise ApiError(SANDBOX_ERRORS.get(error.partition(":")[0], 422), error)
    return done


async def _body_within(request: Request, limit: int) -> BinaryIO:
    """The request body in a spool (on disk past 1 MiB), refused with 413 as soon as it is known to
    pass ``limit``: from its Content-Length before a byte is read, else while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"files over {limit} bytes are refused (this one declares {declared})")
    body = spool()
    try:
        async for chunk in request.stream():
            if body.tell() + len(chunk) > limit:
                raise ApiError(413, f"files over {limit} bytes are refused")
            body.write(chunk)  # page cache past 1 MiB: no wait worth a thread
    except BaseException:
        body.close()
        raise
    return body


@router.put("/{sandbox_id}/files/{path:path}", response_model=FileResult, operation_id="uploadFile", responses=ERRORS)
async def upload(
    sandbox_id: SandboxId, path: FilePath, request: Request, tenant: CurrentTenant, conn: Conn, settings: AppSettings,
    live: Live,
) -> FileResult:  # fmt: skip
    """Write the request body to `path` (relative paths are under /workspace)."""
    await _live_sandbox(conn, settings, tenant, sandbox_id)
    with await _body_within(request, settings.max_file_bytes) as body:
        size = body.tell()
        artifact = inline = None
        if size > MAX_INLINE_BYTES:  # too big for a record: the bytes go through the artifact store
            await admit_artifact_bytes(conn, settings, tenant, size)
            store = request.app.state.artifacts
            artifact = await run_in_threadpool(store.put_file, tenant, body, "application/octet-stream", path)
        else:
            body.seek(0)
            inline = body.read()
    payload = {"request_id": new_id(), "path": path, "content": inline, "artifact": artifact, "mode": 0o644}
    command = _command(tenant, sandbox_id, "sandbox.file.write", payload)
    # the stored bytes are an artifact like any other: listed, counted against the quota, deletable
    stored = [_command(tenant, sandbox_id, "artifact.stored", {"artifact": artifact, "command_id": None})]
    done = await _file_op(request, live, tenant, sandbox_id, command, "file.written", stored if artifact else ())
    return FileResult(path=done.payload["path"], size=done.payload["size"], sha256=done.payload["sha256"])


@router.get(
    "/{sandbox_id}/files/{path:path}",
    operation_id="downloadFile",
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
async def download(
    sandbox_id: SandboxId, path: FilePath, request: Request, tenant: CurrentTenant, conn: Conn, settings: AppSettings,
    live: Live, export: Annotated[bool, Query(description="Store the file as an artifact and answer its id.")] = False,
) -> Response:  # fmt: skip
    await _live_sandbox(conn, settings, tenant, sandbox_id)
    command = _command(tenant, sandbox_id, "sandbox.file.read", {"request_id": new_id(), "path": path})
    done = await _file_op(request, live, tenant, sandbox_id, command, "file.read")
    ref = done.payload["artifact"]
    store = request.app.state.artifacts
    if export:
        if ref is None:
            await admit_artifact_bytes(conn, settings, tenant, done.payload["size"])
            ref = await run_in_threadpool(
                store.put, tenant, done.payload["content"] or b"", "application/octet-stream", path
            )
            stored = _command(tenant, sandbox_id, "artifact.stored", {"artifact": ref, "command_id": None})
            await _append(request, [stored])
        return JSONResponse({"artifact_id": ref["artifact_id"], "size": ref["size"], "sha256": ref["sha256"]})
    if ref is not None:  # a plain download: the copy the processor stored is deleted once it is sent
        response = await artifact_response(store, ref, "application/octet-stream")
        deleted = Envelope(type="artifact.deleted", stream_id=sandbox_id, tenant_id=tenant, actor=f"tenant:{tenant}",
                           payload={"artifact_id": ref["artifact_id"], "reason": "transient"})  # fmt: skip
        response.background = BackgroundTask(request.app.state.producer.append_many, [deleted])
        return response
    data = done.payload["content"] or b""
    return Response(data, media_type="application/octet-stream", headers={"X-Sha256": done.payload["sha256"]})


@router.post("/{sandbox_id}/exec/{command_id}/cancel", status_code=202, operation_id="cancelExec", responses=ERRORS)
async def cancel_exec(
    sandbox_id: SandboxId,
    command_id: CommandId,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
) -> Response:
    """Kill a running command's whole process tree; its exec.finished says cancelled."""
    await _live_sandbox(conn, settings, tenant, sandbox_id)
    await _append(request, [_command(tenant, sandbox_id, "sandbox.exec.cancel", {"command_id": command_id})])
    return Response(status_code=202)
