"""Health: the only unauthenticated endpoint; reports Kafka and PostgreSQL separately."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

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


async def _postgres_health(request: Request) -> ServiceHealth:
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
        return ServiceHealth(ok=True, detail="SELECT 1 ok")
    except Exception as e:
        return ServiceHealth(ok=False, detail=type(e).__name__)


@router.get("/health", response_model=Health, operation_id="getHealth", responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    kafka, postgres = await asyncio.gather(
        asyncio.to_thread(_kafka_health, request.app.state.settings), _postgres_health(request)
    )
    body = Health(status="ok" if kafka.ok and postgres.ok else "degraded", kafka=kafka, postgres=postgres)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
