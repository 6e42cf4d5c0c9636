"""Named dependencies, so authentication and tenant scoping are written once."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from astraforge.api.errors import ApiError
from astraforge.api.live import LiveTail
from astraforge.config import Settings

bearer = HTTPBearer(auto_error=False, description="An API key from `astraforge keys create`.")


def get_settings(request: Request) -> Settings:
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


def get_conn(request: Request) -> StatementConnection:
    return StatementConnection(request.app.state.pool)


def get_live(request: Request) -> LiveTail:
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
