"""Assembles the FastAPI app: settings, the PostgreSQL pool, the live tail and the routes."""

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from astraforge import __version__
from astraforge.api import docs, errors, web
from astraforge.api.auth import KeyVerifier
from astraforge.api.commands import CommandService
from astraforge.api.heartbeats import HeartbeatCoalescer
from astraforge.api.idempotency import IdempotencyStore
from astraforge.api.live import LiveTail
from astraforge.api.quotas import Reservations, UploadSlots
from astraforge.api.routes import (
    artifacts,
    conversations,
    health,
    integrations,
    leases,
    runs,
    sandboxes,
    streams,
    webhooks,
)
from astraforge.artifacts import make_artifact_store
from astraforge.config import Settings, get_settings
from astraforge.db import ensure_control_schema
from astraforge.producers.kafka import EventProducer
from astraforge.producers.webhooks import RefusalBudget
from astraforge.sandbox.egress_addresses import AddressPolicy
from astraforge.secretbox import SecretBox

LOG = logging.getLogger(__name__)


async def _configure(conn) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()


async def _sweep(store: IdempotencyStore, every_s: float = 600.0) -> None:
    """Forget expired idempotency keys now and then (every instance may; deleting twice is harmless)."""
    while True:
        try:
            await store.sweep()
        except Exception:  # the database may be down for a moment; claims ignore expired keys anyway
            LOG.warning("idempotency sweep failed", exc_info=True)
        await asyncio.sleep(every_s)


def create_app(settings: Settings | None = None, sse_ping_s: float = 15.0) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ensure_control_schema(settings)
        app.state.pool = AsyncConnectionPool(
            settings.database_dsn(),  # the same credentials as astraforge.db.connect
            min_size=2,
            max_size=20,
            open=False,
            configure=_configure,
            kwargs={"row_factory": dict_row, "autocommit": True},
        )
        await app.state.pool.open(wait=True, timeout=10)
        app.state.live = LiveTail(settings)
        app.state.live.start()
        # serve once the tail is connected (subscribe never waits on the event loop); if Kafka is
        # down the app starts anyway, answering 503 and reporting it on /health
        await asyncio.to_thread(app.state.live.ready.wait, settings.kafka_timeout_s * 2)
        app.state.producer = EventProducer(settings)
        app.state.artifacts = make_artifact_store(settings)
        app.state.commands = CommandService(settings, app.state.producer, app.state.live, app.state.pool)
        app.state.idempotency = IdempotencyStore(app.state.pool)
        sweeper = asyncio.create_task(_sweep(app.state.idempotency))
        try:
            yield
        finally:
            sweeper.cancel()
            await app.state.idempotency.drain(timeout=5)
            app.state.producer.close()
            app.state.live.stop()
            await app.state.pool.close()

    app = FastAPI(
        title="AstraForge",
        version=__version__,
        description="Sandboxes for AI coding agents; every record is an immutable Kafka event.",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by api/docs.py (the defaults load a CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.egress_policy = AddressPolicy.from_settings(settings)  # for the egress rules' create check
    app.state.keys = KeyVerifier(settings.key_cache_ttl_s)
    app.state.secretbox = SecretBox.from_settings(settings)  # integration secrets, sealed at rest
    app.state.refusals = RefusalBudget()  # refused webhook deliveries recorded one by one, up to a rate
    app.state.heartbeats = HeartbeatCoalescer()
    app.state.reservations = Reservations()  # quota admissions not yet projected
    app.state.uploads = UploadSlots()  # uploads in flight per tenant (each spools to disk)
    app.state.sse_ping_s = sse_ping_s
    errors.install(app)
    webhooks.redact_access_log()
    app.include_router(health.router)
    app.include_router(streams.router)
    app.include_router(sandboxes.router)
    app.include_router(artifacts.router)
    app.include_router(runs.router)
    app.include_router(conversations.router)
    app.include_router(leases.router)
    app.include_router(integrations.router)
    app.include_router(webhooks.router)
    docs.install(app)
    web.install(app, settings.web_dist)  # last: its SPA fallback answers only what no route above does
    return app
