"""API shapes (kept apart from record payloads and projection tables)."""

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from astraforge.ids import from_micros
from astraforge.schemas import Envelope


def iso(when: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, identical for projection rows and Kafka records."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class EventPublic(BaseModel):
    """One record of a stream, as REST and SSE serve it."""

    offset: int = Field(description="Kafka offset: the record's sequence number in its stream.")
    partition: int
    event_id: str
    type: str
    stream_id: str
    sandbox_id: str | None
    occurred_at: str
    actor: str
    causation_id: str | None
    correlation_id: str | None
    payload: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict) -> "EventPublic":
        return cls(**{**row, "occurred_at": iso(row["occurred_at"])})

    @classmethod
    def from_envelope(cls, partition: int, offset: int, e: Envelope) -> "EventPublic":
        return cls(
            offset=offset, partition=partition, event_id=e.event_id, type=e.type, stream_id=e.stream_id,
            sandbox_id=e.sandbox_id, occurred_at=iso(from_micros(e.occurred_at)), actor=e.actor,
            causation_id=e.causation_id, correlation_id=e.correlation_id, payload=e.payload_json(),
        )  # fmt: skip


class EventsPublic(BaseModel):
    items: list[EventPublic]
    next_after: int | None = Field(description="Pass as `after` for the next page; null at the end.")


class StreamPublic(BaseModel):
    stream_id: str
    partition: int
    first_offset: int
    last_offset: int
    event_count: int
    created_at: str
    updated_at: str


class StreamsPublic(BaseModel):
    items: list[StreamPublic]
    next_after: str | None


class ServiceHealth(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: str
    kafka: ServiceHealth
    postgres: ServiceHealth


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail
