"""Health: the only unauthenticated endpoint; reports Kafka and PostgreSQL separately."""

import asyncio

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg import sql

from astraforge.api.models import Health, ServiceHealth
from astraforge.kafka import partitions_of, reader

router = APIRouter(tags=["health"])


def _kafka_health(settings) -> ServiceHealth:
    consumer = reader(settings)
    try:
        parts = partitions_of(consumer, settings.events_topic, timeout=2)
        return ServiceHealth(ok=True, detail=f"{settings.events_topic}: {len(parts)} partitions")
    except Exception as e:
        return ServiceHealth(ok=False, detail=str(e))
    finally:
        consumer.close()


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
    kafka, (postgres, projection) = await asyncio.gather(
        asyncio.to_thread(_kafka_health, request.app.state.settings), _postgres_health(request)
    )
    ok = kafka.ok and postgres.ok and projection.ok
    body = Health(status="ok" if ok else "degraded", kafka=kafka, postgres=postgres, projection=projection)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
