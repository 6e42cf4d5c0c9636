"""The audit replay: a stream's records read straight from Kafka (never from the projection),
and a verification that the projection holds exactly those records."""

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from astraforge.config import Settings
from astraforge.db import connect
from astraforge.ids import from_micros, iso
from astraforge.kafka import Positioned, ReaderPool, partition_for, partitions_of, read_range, reader
from astraforge.schemas import Codec, Envelope, default_codec


def record_json(partition: int, offset: int, e: Envelope) -> dict[str, Any]:
    """A record as the replay prints it and the API serves it (``EventPublic``): JSON-safe values,
    ``occurred_at`` in ISO-8601 UTC."""
    return {
        "offset": offset,
        "partition": partition,
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


def stream_partition(settings: Settings, stream_id: str) -> int:
    consumer = reader(settings)
    try:
        count = len(partitions_of(consumer, settings.events_topic, settings.kafka_timeout_s))
    finally:
        consumer.close()
    return partition_for(stream_id, count)


def stream_range(
    settings: Settings,
    stream_id: str,
    partition: int,
    start: int,
    end: int | None,
    follow: bool = False,
    codec: Codec | None = None,
    pool: ReaderPool | None = None,
) -> Iterator[Positioned]:
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
    """Compare Kafka with the projection, record by record and row by row. Returns (records
    checked, differences).

    Only what the projection claims to have consumed is compared: Kafka is read up to the stored
    offset of the stream's partition, so a projector that merely lags is not a difference. Each
    side is taken as it is stored (the envelope as decoded; the row's columns), with a conversion
    of its own, so a bug in the projection's serialisation cannot hide itself. The stream's
    ``streams`` row and the ``sandboxes`` rows of its sandboxes are checked against the records too.
    """
    schema = sql.Identifier(settings.projection_schema)
    partition = stream_partition(settings, stream_id)
    with connect(settings) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        stored = conn.execute(
            sql.SQL("SELECT next_offset FROM {}.consumer_offsets WHERE topic = %s AND partition = %s").format(schema),
            (settings.events_topic, partition),
        ).fetchone()
        rows = conn.execute(
            sql.SQL('SELECT * FROM {}.events WHERE stream_id = %s ORDER BY "offset"').format(schema), (stream_id,)
        ).fetchall()
        stream_row = conn.execute(
            sql.SQL("SELECT * FROM {}.streams WHERE stream_id = %s").format(schema), (stream_id,)
        ).fetchone()
        sandbox_rows = conn.execute(
            sql.SQL("SELECT * FROM {}.sandboxes WHERE stream_id = %s").format(schema), (stream_id,)
        ).fetchall()
    end = stored["next_offset"] if stored else 0
    kafka = {p.offset: p.envelope for p in stream_range(settings, stream_id, partition, 0, end)} if end else {}
    projected = {r["offset"]: r for r in rows}
    diffs = [Difference(o, "in Kafka, missing from the projection") for o in sorted(kafka.keys() - projected.keys())]
    diffs += [Difference(o, "in the projection, not in Kafka") for o in sorted(projected.keys() - kafka.keys())]
    for offset in sorted(kafka.keys() & projected.keys()):
        diffs += [Difference(offset, problem) for problem in _row_differences(kafka[offset], projected[offset])]
    diffs += _read_model_differences(stream_id, partition, kafka, stream_row, sandbox_rows)
    return len(kafka), sorted(diffs, key=lambda d: d.offset)


ENVELOPE_COLUMNS = ("event_id", "type", "tenant_id", "actor", "sandbox_id", "causation_id", "correlation_id",
                    "schema_version", "stream_id")  # fmt: skip


def _row_differences(envelope, row: dict) -> list[str]:
    problems = [
        f"{c}: Kafka {getattr(envelope, c)!r} != projection {row[c]!r}"
        for c in ENVELOPE_COLUMNS
        if getattr(envelope, c) != row[c]
    ]
    occurred = row["occurred_at"]
    micros = (occurred - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    if micros != envelope.occurred_at:
        problems.append(f"occurred_at: Kafka {envelope.occurred_at} != projection {micros}")
    problems += [f"payload.{k}: {p}" for k, p in _payload_differences(envelope.payload, row["payload"])]
    return problems


def _payload_differences(kafka: Any, stored: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """The projection keeps bytes as text when UTF-8 without NUL, else as ``{"base64": ...}``:
    undo that here, independently of the code that did it."""
    if isinstance(kafka, bytes):
        if isinstance(stored, dict) and set(stored) == {"base64"}:
            stored = base64.b64decode(stored["base64"])
        elif isinstance(stored, str):
            stored = stored.encode()
    if isinstance(kafka, dict) and isinstance(stored, dict):
        for k in kafka.keys() | stored.keys():
            yield from _payload_differences(kafka.get(k), stored.get(k), f"{key}.{k}" if key else k)
    elif isinstance(kafka, list) and isinstance(stored, list) and len(kafka) == len(stored):
        for i, (a, b) in enumerate(zip(kafka, stored, strict=True)):
            yield from _payload_differences(a, b, f"{key}[{i}]")
    elif kafka != stored:
        yield key, f"Kafka {kafka!r} != projection {stored!r}"


def _read_model_differences(stream_id, partition, kafka: dict, stream_row, sandbox_rows) -> list[Difference]:
    diffs = []
    if kafka:
        first, last = min(kafka), max(kafka)
        expected = {
            "tenant_id": kafka[first].tenant_id,
            "partition": partition,
            "first_offset": first,
            "last_offset": last,
            "event_count": len(kafka),
        }
        if stream_row is None:
            diffs.append(Difference(last, f"streams: no row for {stream_id}"))
        else:
            diffs += [
                Difference(last, f"streams.{k}: Kafka {v!r} != projection {stream_row[k]!r}")
                for k, v in expected.items()
                if stream_row[k] != v
            ]
    states: dict[str, tuple[int, str, str]] = {}  # sandbox -> (offset, state, tenant) of its last lifecycle record
    for offset, e in sorted(kafka.items()):
        if (
            e.type.startswith("sandbox.")
            and "state" in e.payload
            and e.sandbox_id
            and e.type != "sandbox.heartbeat.recorded"
        ):
            states[e.sandbox_id] = (offset, e.payload["state"], e.tenant_id)
    by_id = {r["sandbox_id"]: r for r in sandbox_rows}
    for sandbox_id, (offset, state, tenant) in states.items():
        row = by_id.get(sandbox_id)
        if row is None:
            diffs.append(Difference(offset, f"sandboxes: no row for {sandbox_id}"))
        elif (row["state"], row["tenant_id"], row["last_offset"]) != (state, tenant, offset):
            diffs.append(
                Difference(
                    offset,
                    f"sandboxes.{sandbox_id}: Kafka {(state, tenant, offset)!r} != projection "
                    f"{(row['state'], row['tenant_id'], row['last_offset'])!r}",
                )
            )
    return diffs
