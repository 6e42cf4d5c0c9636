"""Named dependencies, so authentication and tenant scoping are written once."""

from collections.abc import AsyncIterator
from typing import Annotated

import psycopg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from astraforge.api.errors import ApiError
from astraforge.api.live import LiveTail
from astraforge.config import Settings

bearer = HTTPBearer(auto_error=False, description="An API key from `astraforge keys create`.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_conn(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    async with request.app.state.pool.connection() as conn:
        yield conn


def get_live(request: Request) -> LiveTail:
    return request.app.state.live


Conn = Annotated[psycopg.AsyncConnection, Depends(get_conn)]
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
