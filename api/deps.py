"""Named dependencies, so authentication, tenant scoping and ownership are written once: a route
that takes ``OwnedSandbox`` never sees another tenant's sandbox (404), one that takes
``OpenSandbox`` never sends a command to a sandbox that is stopping or ended (409)."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from astraforge.api.commands import CommandService
from astraforge.api.errors import ApiError
from astraforge.api.idempotency import HEADER, Idempotent, check_key
from astraforge.api.live import LiveTail
from astraforge.api.params import ArtifactId, ConversationId, RunId, SandboxId
from astraforge.config import Settings
from astraforge.projections.queries import queries_for

T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, description="An API key from `astraforge keys create`.")


# The dependencies below only read app state, yet are ``async def``: FastAPI runs a plain ``def``
# dependency in its thread pool, one thread hop each (four per exec: ~0.5 ms of the handler).


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


class StatementConnection:
    """What routes read through: each statement borrows a pooled connection and gives it back before
    the route goes on, so no request holds one while it waits on Kafka, a sandbox or an SSE client
    (a request-long connection let 22 SSE streams of one tenant starve every other tenant's REST
    calls). Routes only read (writes are Kafka records), so nothing needs a transaction."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def execute(self, query, params=None) -> "FetchedRows":
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            return FetchedRows(await cur.fetchall() if cur.description else [])


class FetchedRows:
    """The rows of one statement, with the cursor methods the queries use."""

    def __init__(self, rows: list) -> None:
        self.rows = rows

    async def fetchone(self):
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list:
        return self.rows


async def get_conn(request: Request) -> StatementConnection:
    return StatementConnection(request.app.state.pool)


async def get_live(request: Request) -> LiveTail:
    return request.app.state.live


Conn = Annotated[StatementConnection, Depends(get_conn)]
Live = Annotated[LiveTail, Depends(get_live)]
AppSettings = Annotated[Settings, Depends(get_settings)]


async def current_tenant(
    request: Request, conn: Conn, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "missing API key: send `Authorization: Bearer <key>`")
    tenant = await request.app.state.keys.tenant_for(conn, credentials.credentials)
    if tenant is None:
        raise ApiError(401, "invalid or revoked API key")
    return tenant


CurrentTenant = Annotated[str, Depends(current_tenant)]


async def get_commands(request: Request) -> CommandService:
    return request.app.state.commands


Commands = Annotated[CommandService, Depends(get_commands)]


async def idempotent(
    request: Request,
    tenant: CurrentTenant,
    key: Annotated[
        str | None,
        Header(alias=HEADER, description="Retry-safe: the same key answers the same result for 24 h (see the README)."),
    ] = None,
) -> Idempotent:
    return Idempotent(request.app.state.idempotency, tenant, check_key(key), f"{request.method} {request.url.path}")


IdempotencyKey = Annotated[Idempotent, Depends(idempotent)]


async def owned_sandbox(
    sandbox_id: SandboxId, tenant: CurrentTenant, conn: Conn, settings: AppSettings, request: Request
) -> dict:
    """The tenant's sandbox (its projection row), or 404: another tenant's id is unknown here.

    A create answers from the processor's records, a few milliseconds before the projection
    writes the row: a sandbox this API process admitted for the tenant and the projection does
    not show yet is waited for (``until_projected``), so create-then-exec never 404s.
    """
    queries = queries_for(settings.projection_schema)
    admitted = sandbox_id in request.app.state.reservations.held.get(tenant, {})
    row = await until_projected(lambda: queries.sandbox(conn, tenant, sandbox_id), lambda row: row is None and admitted)
    if row is None:
        raise ApiError(404, f"sandbox {sandbox_id} not found")
    return row


async def until_projected(read: Callable[[], Awaitable[T]], missing: Callable[[T], bool]) -> T:
    """``read()``, again while what it gives lacks something this API process admitted and the
    projection does not show yet (``missing``), for ``UNPROJECTED_WAIT_S`` at most: read-your-writes
    for a caller whose create was answered from the processor's records."""
    found = await read()
    deadline, pause = time.monotonic() + UNPROJECTED_WAIT_S, UNPROJECTED_POLL_S
    while missing(found) and time.monotonic() < deadline:
        await asyncio.sleep(pause)
        pause = min(pause * 2, UNPROJECTED_MAX_POLL_S)  # the usual lag is milliseconds; a long one is not polled hard
        found = await read()
    return found


UNPROJECTED_WAIT_S = 10.0
UNPROJECTED_POLL_S = 0.005
UNPROJECTED_MAX_POLL_S = 0.1


OwnedSandbox = Annotated[dict, Depends(owned_sandbox)]
SANDBOX_ENDED = ("terminated", "failed")


def ensure_open(row: dict) -> dict:
    """The sandbox if it still takes commands (not stopping or ended), else 409."""
    if row["state"] in SANDBOX_ENDED or row["state"] == "stopping":
        raise ApiError(409, f"sandbox {row['sandbox_id']} is {row['state']}")
    return row


async def open_sandbox(row: OwnedSandbox) -> dict:
    """The tenant's sandbox, still taking commands, or 404 / 409."""
    return ensure_open(row)


OpenSandbox = Annotated[dict, Depends(open_sandbox)]


async def owned_snapshot(snapshot_id: ArtifactId, tenant: CurrentTenant, conn: Conn, settings: AppSettings) -> dict:
    """The tenant's snapshot (its artifact row), or 404."""
    return await require_snapshot(conn, settings, tenant, snapshot_id)


async def owned_artifact(artifact_id: ArtifactId, tenant: CurrentTenant, conn: Conn, settings: AppSettings) -> dict:
    """The tenant's artifact (not deleted), or 404."""
    return await _artifact_row(conn, settings, tenant, artifact_id, "artifact")


OwnedArtifact = Annotated[dict, Depends(owned_artifact)]


async def require_snapshot(conn: Conn, settings: Settings, tenant: str, snapshot_id: str) -> dict:
    """The tenant's snapshot (a snapshot is an artifact), or 404."""
    return await _artifact_row(conn, settings, tenant, snapshot_id, "snapshot")


async def _artifact_row(conn: Conn, settings: Settings, tenant: str, artifact_id: str, noun: str) -> dict:
    row = await queries_for(settings.projection_schema).artifact(conn, tenant, artifact_id)
    if row is None:
        raise ApiError(404, f"{noun} {artifact_id} not found")
    return row


OwnedSnapshot = Annotated[dict, Depends(owned_snapshot)]


async def owned_run(run_id: RunId, tenant: CurrentTenant, conn: Conn, settings: AppSettings) -> dict:
    """The tenant's run (its projection row), or 404: another tenant's id is unknown here."""
    row = await queries_for(settings.projection_schema).run(conn, tenant, run_id)
    if row is None:
        raise ApiError(404, f"run {run_id} not found")
    return row


OwnedRun = Annotated[dict, Depends(owned_run)]


async def owned_conversation(
    conversation_id: ConversationId, tenant: CurrentTenant, conn: Conn, settings: AppSettings
) -> dict:
    """The tenant's conversation (its projection row), or 404: another tenant's id is unknown here."""
    row = await queries_for(settings.projection_schema).conversation(conn, tenant, conversation_id)
    if row is None:
        raise ApiError(404, f"conversation {conversation_id} not found")
    return row


OwnedConversation = Annotated[dict, Depends(owned_conversation)]
