"""SSE frames of records read from Kafka (the live tail, gap fills), written straight as text.

A pydantic model per event (validate, then ``model_dump_json``) and one ASGI send per event capped
SSE at a few thousand events/s. A frame here carries the JSON ``EventPublic`` would (same fields in
the same order, compact, non-ASCII as is), and the route sends many frames as one chunk. Replayed
frames are built by PostgreSQL (``ProjectionQueries.event_frames``) in the same shape.
"""

from json.encoder import encode_basestring  # type: ignore[attr-defined]

import orjson

from astraforge.api.models import iso
from astraforge.audit import record_json
from astraforge.ids import from_micros
from astraforge.kafka import Positioned
from astraforge.schemas import Codec


def _frame(event: dict) -> str:
    # orjson writes what model_dump_json writes (compact, non-ASCII as is, 1e16 not 1e+16, NaN as null)
    return f"id: {event['offset']}\nevent: {event['type']}\ndata: {orjson.dumps(event).decode()}\n\n"


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def from_bytes(codec: Codec, partition: int, offset: int, value: bytes | None) -> tuple[str, str] | None:
    """``(tenant_id, frame)`` of a record straight from its bytes (``Codec.decode_json_fields``: no
    ``Envelope``, no dict per event), the same text ``from_record`` writes; ``None`` when that path
    is unsure (``from_record`` of the full decode then decides)."""
    fields = codec.decode_json_fields(value)
    if fields is None:
        return None
    event_id, type_, stream_id, tenant_id, actor, sandbox_id, causation_id, correlation_id, occurred_at, _, payload = (
        fields
    )
    try:
        when = iso(from_micros(occurred_at))
    except ValueError:
        return None
    data = (
        f'{{"offset":{offset},"partition":{partition},"event_id":{_text(event_id)},"type":{_text(type_)},'
        f'"stream_id":{_text(stream_id)},"sandbox_id":{_text(sandbox_id)},"occurred_at":"{when}",'
        f'"actor":{_text(actor)},"causation_id":{_text(causation_id)},"correlation_id":{_text(correlation_id)},'
        f'"payload":{payload.decode()}}}'
    )
    return tenant_id, f"id: {offset}\nevent: {type_}\ndata: {data}\n\n"


def from_record(record: Positioned) -> str:
    """The frame of a record read from Kafka (its payload as the projection stores it)."""
    return _frame(record_json(record.partition, record.offset, record.envelope))
