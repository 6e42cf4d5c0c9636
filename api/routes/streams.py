"""A stream's records: REST pages from the projection, and SSE (replay, then live, exactly once).

SSE order of work: subscribe to the live tail first (which snapshots its Kafka positions), replay
rows from the projection, fill any records the projection has not written yet straight from
Kafka, then switch to live, dropping offsets already sent. ``id:`` is the Kafka offset, and a
reconnect with ``Last-Event-ID`` resumes after it.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from astraforge.api import frames
from astraforge.api.deps import AppSettings, Conn, CurrentTenant, Live
from astraforge.api.errors import ApiError
from astraforge.api.live import Subscriber
from astraforge.api.models import (
    ErrorBody,
    EventPublic,
    EventsPublic,
    StreamDifference,
    StreamPublic,
    StreamsPublic,
    StreamVerification,
)
from astraforge.api.params import After, StreamId
from astraforge.audit import stream_range, verify
from astraforge.config import Settings
from astraforge.ids import iso
from astraforge.kafka import Positioned, partition_for
from astraforge.projections.queries import ProjectionQueries, queries_for

router = APIRouter(prefix="/v1/streams", tags=["streams"])
ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}}
REPLAY_PAGE = 1000
LIVE_BATCH = 1000


def queries(settings: Settings) -> ProjectionQueries:
    return queries_for(settings.projection_schema)


@router.get("", response_model=StreamsPublic, operation_id="listStreams", responses=ERRORS)
async def list_streams(
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    after: After = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> StreamsPublic:
    rows = await queries(settings).streams(conn, tenant, after, limit)
    items = [
        StreamPublic(**{**r, "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])}) for r in rows
    ]
    return StreamsPublic(items=items, next_after=items[-1].stream_id if len(items) == limit else None)


@router.get("/{stream_id}/events", response_model=EventsPublic, operation_id="listStreamEvents", responses=ERRORS)
async def list_events(
    stream_id: StreamId,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    after: Annotated[int, Query(ge=-1, le=2**62, description="Return records with offset > after.")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventsPublic:
    q = queries(settings)
    if await q.stream(conn, tenant, stream_id) is None:
        raise ApiError(404, f"stream {stream_id} not found")
    async with request.app.state.pool.connection() as page_conn:  # one transaction: see ProjectionQueries.events
        rows = await q.events(page_conn, tenant, stream_id, after, limit)
    items = [EventPublic.from_row(r) for r in rows]
    return EventsPublic(items=items, next_after=items[-1].offset if len(items) == limit else None)


@router.get("/{stream_id}/verify", response_model=StreamVerification, operation_id="verifyStream", responses=ERRORS)
async def verify_stream(stream_id: StreamId, tenant: CurrentTenant, conn: Conn, settings: AppSettings):
    """``replay --verify``: the stream read straight from Kafka, compared record by record with the
    projection (what the API serves); ``ok`` is false on any difference."""
    if await queries(settings).stream(conn, tenant, stream_id) is None:
        raise ApiError(404, f"stream {stream_id} not found")
    checked, diffs = await asyncio.to_thread(verify, settings, stream_id)
    return StreamVerification(
        stream_id=stream_id,
        checked=checked,
        ok=not diffs,
        differences=[StreamDifference(offset=d.offset, problem=d.problem) for d in diffs],
    )


def _resume_point(after: int | None, last_event_id: str | None) -> int:
    if last_event_id is None or last_event_id == "":
        return after if after is not None else -1
    try:
        value = int(last_event_id)
    except ValueError:
        raise ApiError(400, "Last-Event-ID must be an event offset (an integer)") from None
    if value < -1:
        raise ApiError(400, "Last-Event-ID must be >= -1")
    return value


@router.get(
    "/{stream_id}/events/sse",
    operation_id="streamEvents",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}},
)
async def stream_events(
    stream_id: StreamId,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    live: Live,
    after: Annotated[int | None, Query(ge=-1, le=2**62)] = None,
    last_event_id: Annotated[str | None, Header(max_length=30)] = None,
) -> EventSourceResponse:
    resume = _resume_point(after, last_event_id)
    if await queries(settings).stream_exists_elsewhere(conn, tenant, stream_id):
        raise ApiError(404, f"stream {stream_id} not found")
    sub = live.subscribe(stream_id, tenant, frames=True)
    pool = request.app.state.pool
    return EventSourceResponse(
        _sse(sub, live, pool, settings, tenant, stream_id, resume),
        ping=request.app.state.sse_ping_s,
        sep="\n",  # plain LF: some clients split a CRLF that straddles two chunks into two lines
        headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
    )


async def _sse(
    sub: Subscriber, live, pool, settings: Settings, tenant: str, stream_id: str, last: int
) -> AsyncIterator[bytes]:
    """SSE frames, several to a chunk: a replay page, a gap fill, or whatever the live queue holds."""
    q = queries(settings)
    try:
        # 1. replay what the projection holds. Its progress is read *first*: rows committed while
        #    we replay only move `last` further, never past records nobody will send.
        async with pool.connection() as conn:
            projected = await q.next_offsets(conn, settings.events_topic)
        while True:  # a page at a time, so a slow client never holds a pooled connection
            async with pool.connection() as conn:
                count, page_last, text = await q.event_frames(conn, tenant, stream_id, last, REPLAY_PAGE)
            if count:
                yield text.encode()
                last = page_last
            if count < REPLAY_PAGE:
                break
        async with pool.connection() as conn:
            stream = await q.stream(conn, tenant, stream_id)
        # 2. records the live tail will not deliver and the projection did not have yet (only in the
        #    stream's own partition: the producer's partitioner is CRC32(key) mod partitions)
        home = stream["partition"] if stream is not None else partition_for(stream_id, len(sub.positions))
        for partition, live_from in sub.positions.items():
            if partition != home:
                continue
            start = max(last + 1 if stream else 0, projected.get(partition, 0))
            if start < live_from:
                chunk = []
                for e in await asyncio.to_thread(_from_kafka, settings, live, partition, start, live_from, stream_id):
                    if e.envelope.tenant_id == tenant and e.offset > last:
                        chunk.append(frames.from_record(e))
                        last = e.offset
                if chunk:
                    yield "".join(chunk).encode()
        # 3. live: what the queue holds is sent together (one write for a burst)
        while True:
            items = [await sub.next()]
            if items[0] is not None:
                items += sub.drain(LIVE_BATCH - 1)
            chunk = []
            for item in items:
                if item is None:
                    break  # fell too far behind: the client reconnects with Last-Event-ID
                if item.offset > last:
                    chunk.append(item.text)  # built once by the tail for every subscriber
                    last = item.offset
            if chunk:
                yield "".join(chunk).encode()
            if item is None:
                return
    finally:
        live.unsubscribe(sub)


def _from_kafka(settings: Settings, live, partition: int, start: int, end: int, stream_id: str) -> list[Positioned]:
    return list(stream_range(settings, stream_id, partition, start, end, pool=live.readers))
