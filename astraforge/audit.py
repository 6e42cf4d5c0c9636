"""The audit replay: a stream's records read straight from Kafka (never from the projection),
and a verification that the projection holds exactly those records."""

from collections.abc import Iterator
from dataclasses import dataclass

from psycopg import sql

from astraforge.config import Settings
from astraforge.db import connect
from astraforge.kafka import Positioned, ReaderPool, partition_for, partitions_of, read_range, reader
from astraforge.schemas import Codec, default_codec


def stream_partition(settings: Settings, stream_id: str) -> int:
    consumer = reader(settings)
    try:
        count = len(partitions_of(consumer, settings.events_topic, settings.kafka_timeout_s))
    finally:
        consumer.close()
    return partition_for(stream_id, count)


def stream_range(
    settings: Settings, stream_id: str, partition: int, start: int, end: int | None, follow: bool = False,
    codec: Codec | None = None, pool: ReaderPool | None = None,
) -> Iterator[Positioned]:  # fmt: skip
    """The stream's records in ``[start, end)`` of its partition, decoded, in order; undecodable ones are
    skipped (they are in the dead-letter topic)."""
    codec = codec or default_codec()
    key = stream_id.encode()
    for msg in read_range(settings, settings.events_topic, partition, start, end, follow=follow, pool=pool):
        if msg.key() != key:
            continue
        try:
            yield Positioned(msg.partition(), msg.offset(), codec.decode(msg.value()))
        except Exception:
            continue


def stream_records(
    settings: Settings, stream_id: str, from_offset: int = 0, follow: bool = False, codec: Codec | None = None
) -> Iterator[Positioned]:
    """Every record of the stream at offset >= ``from_offset``, in order."""
    partition = stream_partition(settings, stream_id)
    yield from stream_range(settings, stream_id, partition, max(from_offset, 0), None, follow, codec)


@dataclass(frozen=True)
class Difference:
    offset: int
    problem: str


def verify(settings: Settings, stream_id: str) -> tuple[int, list[Difference]]:
    """Compare Kafka with the projection, record by record. Returns (records checked, differences)."""
    from astraforge.api.models import EventPublic  # the one serialisation both sides share

    kafka = {
        p.offset: EventPublic.from_envelope(p.partition, p.offset, p.envelope).model_dump()
        for p in stream_records(settings, stream_id)
    }
    with connect(settings) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        query = sql.SQL('SELECT * FROM {}.events WHERE stream_id = %s ORDER BY "offset"')
        rows = conn.execute(query.format(sql.Identifier(settings.projection_schema)), (stream_id,)).fetchall()
    projected = {r["offset"]: EventPublic.from_row(r).model_dump() for r in rows}
    diffs = [Difference(o, "in Kafka, missing from the projection") for o in sorted(kafka.keys() - projected.keys())]
    diffs += [Difference(o, "in the projection, not in Kafka") for o in sorted(projected.keys() - kafka.keys())]
    for offset in sorted(kafka.keys() & projected.keys()):
        for field, value in kafka[offset].items():
            if projected[offset][field] != value:
                diffs.append(Difference(offset, f"{field}: Kafka {value!r} != projection {projected[offset][field]!r}"))
    return len(kafka), sorted(diffs, key=lambda d: d.offset)
