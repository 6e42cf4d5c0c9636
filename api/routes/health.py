"""Health: the only unauthenticated endpoint; reports Kafka and PostgreSQL separately."""

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg import sql

from astraforge.api.models import Health, ServiceHealth

router = APIRouter(tags=["health"])


def _kafka_health(request: Request) -> ServiceHealth:
    """From the live tail the API already runs (no consumer per probe)."""
    live = request.app.state.live
    if live.healthy():
        return ServiceHealth(ok=True, detail=f"{live.topic}: {len(live.positions)} partitions, tail connected")
    return ServiceHealth(ok=False, detail="the live tail has no answer from Kafka")


async def _postgres_health(request: Request) -> tuple[ServiceHealth, ServiceHealth]:
    """PostgreSQL itself, and the projection in it: a parked partition is an alert."""
    schema = sql.Identifier(request.app.state.settings.projection_schema)
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            cur = await conn.execute(sql.SQL('SELECT partition, "offset", reason FROM {}.parked').format(schema))
            parked = await cur.fetchall()
    except psycopg.errors.UndefinedTable:
        return ServiceHealth(ok=True, detail="ok"), ServiceHealth(ok=False, detail="no projection schema yet")
    except Exception as e:
        down = ServiceHealth(ok=False, detail=type(e).__name__)
        return down, down
    projection = ServiceHealth(ok=True, detail="projecting")
    if parked:
        where = "; ".join(f"partition {r['partition']} at offset {r['offset']}: {r['reason']}" for r in parked)
        projection = ServiceHealth(ok=False, detail=f"parked (upgrade the projector): {where}")
    return ServiceHealth(ok=True, detail="ok"), projection


@router.get("/health", response_model=Health, operation_id="getHealth", responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    kafka = _kafka_health(request)
    postgres, projection = await _postgres_health(request)
    ok = kafka.ok and postgres.ok and projection.ok
    body = Health(status="ok" if ok else "degraded", kafka=kafka, postgres=postgres, projection=projection)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
