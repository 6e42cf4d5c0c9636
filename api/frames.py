"""SSE frames of records read from Kafka (the live tail, gap fills), written straight as text.

A pydantic model per event (validate, then ``model_dump_json``) and one ASGI send per event capped
SSE at a few thousand events/s. A frame here carries the JSON ``EventPublic`` would (same fields in
the same order, compact, non-ASCII as is), and the route sends many frames as one chunk. Replayed
frames are built by PostgreSQL (``ProjectionQueries.event_frames``) in the same shape.
"""

import json

from astraforge.api.models import iso
from astraforge.ids import from_micros
from astraforge.kafka import Positioned

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # as model_dump_json writes it


def _frame(event: dict) -> str:
    return f"id: {event['offset']}\nevent: {event['type']}\ndata: {_JSON.encode(event)}\n\n"


def from_record(record: Positioned) -> str:
    """The frame of a record read from Kafka (its payload as the projection stores it)."""
    e = record.envelope
    return _frame(
        {
            "offset": record.offset,
            "partition": record.partition,
            "event_id": e.event_id,
            "type": e.type,
            "stream_id": e.stream_id,
            "sandbox_id": e.sandbox_id,
            "occurred_at": iso(from_micros(e.occurred_at)),
            "actor": e.actor,
            "causation_id": e.causation_id,
            "correlation_id": e.correlation_id,
            "payload": e.payload_json(),
        }
    )
