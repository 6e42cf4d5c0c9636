"""The projector: folds the events topic into PostgreSQL, exactly-once in effect.

Each batch is one transaction holding the rows *and* the next offset per partition
(``consumer_offsets``). On start the consumer seeks every partition to its stored offset, so a
crash anywhere — even ``kill -9`` mid-batch — loses nothing and repeats nothing.
A record that cannot be decoded, or decodes but cannot be written (a value PostgreSQL refuses),
goes to the dead-letter topic with the reason (acknowledged by Kafka before the offset past it is
committed) and the projector moves on: one bad record never stops the others' tenants.
A record written by a *newer* schema is different: skipping it would lose it from the projection
for good, so its partition is **parked** at that offset (paused, listed in ``parked``, logged as an
error, reported by ``/health``) until a projector that knows the schema resumes it. Other
partitions go on.
"""

import logging
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from psycopg import sql

from astraforge.config import Settings
from astraforge.db import connect
from astraforge.errors import AstraForgeError, DecodeError, NewerSchema
from astraforge.ids import from_micros
from astraforge.kafka import client_config, high_watermarks, partitions_of, poll_batch
from astraforge.producers.kafka import EventProducer
from astraforge.projections.fold import Upsert, fold, folds
from astraforge.schemas import Codec, Envelope, default_codec

LOG = logging.getLogger(__name__)
EVENT_COLUMNS = (
    "partition", "offset", "stream_id", "tenant_id", "event_id", "type", "occurred_at", "actor",
    "sandbox_id", "causation_id", "correlation_id", "schema_version", "payload",
)  # fmt: skip
# binary COPY: PostgreSQL reads ints and timestamps without parsing text, and each field's bytes go
# as they are (the server reads them by the column's type), so:
# occurred_at goes as int8: binary timestamptz *is* an int8 of µs since 2000-01-01 (PostgreSQL's
# timestamptz_recv reads exactly that), so the row carries ``pg_micros(...)``, not a datetime;
# the payload goes as bytea: binary jsonb *is* a version byte (1) and the JSON text (jsonb_recv), so
# the row carries ``jsonb_wire(payload_json_text)`` and psycopg's JSON dumper is never called
EVENT_TYPES = ("int4", "int8", *["text"] * 4, "int8", *["text"] * 4, "int4", "bytea")  # EVENT_COLUMNS' wire types
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in µs since the Unix epoch
_FIRST_US, _LAST_US = -62_135_596_800_000_000, 253_402_300_799_999_999  # 0001-01-01 .. 9999-12-31T23:59:59.999999Z
TIME_COLUMNS = {"created_at", "updated_at", "occurred_at", "started_at", "deleted_at"}


def jsonb_wire(text: bytes) -> bytes:
    """UTF-8 JSON as binary COPY sends a jsonb field (jsonb_recv: format version 1, then the text)."""
    return b"\x01" + text


def pg_micros(micros: int) -> int:
    """``occurred_at`` (µs since the Unix epoch) as binary COPY writes a timestamptz; ``ValueError``
    outside years 1-9999, as ``from_micros`` (the API reads these rows back as datetimes)."""
    if not _FIRST_US <= micros <= _LAST_US:
        raise ValueError(f"{micros} µs since the epoch is outside years 1-9999")
    return micros - _PG_EPOCH_US


def create_schema(conn: psycopg.Connection, schema: str) -> None:
    ddl = resources.files("astraforge.projections").joinpath("schema.sql").read_text()
    conn.execute(ddl.replace("{schema}", sql.Identifier(schema).as_string(conn)))


def drop_schema(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class ProjectorRunning(AstraForgeError, RuntimeError):
    """Another projector holds the schema (its advisory lock)."""


def projector_lock(schema: str) -> str:
    """The advisory lock key of the one projector that writes ``schema``."""
    return f"astraforge.projection.{schema}"


class Projector:
    """Consumes the events topic into ``schema``; one instance per consumer group member."""

    def __init__(
        self,
        settings: Settings,
        schema: str | None = None,
        codec: Codec | None = None,
        batch_size: int = 5000,
    ) -> None:
        self.settings = settings
        self.schema = schema or settings.projection_schema
        self.codec = codec or default_codec()
        self.batch_size = batch_size
        self.topic = settings.events_topic
        self.stop_event = threading.Event()
        self.projected = 0
        self.dead_lettered = 0
        self.conn = connect(settings)
        with self.conn.transaction():
            create_schema(self.conn, self.schema)
        self._dlq: EventProducer | None = None
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": f"astraforge-projection-{self.schema}",  # for lag tools; never committed
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 20,
                    "max.partition.fetch.bytes": 4 * 1024 * 1024,
                },
            )
        )
        self.positions: dict[int, int] = {}
        self.targets: dict[int, int] = {}
        self.parked: dict[int, tuple[int, str]] = {}  # partition -> (offset, reason)
        self._dead_sent: set[tuple[int, int]] = set()  # dead-lettered in a batch being retried
        self._statements: dict[tuple, str] = {}  # upsert shape -> its statement
        self._assigned = False

    def stored_offsets(self) -> dict[int, int]:
        rows = self.conn.execute(
            sql.SQL("SELECT partition, next_offset FROM {}.consumer_offsets WHERE topic = %s").format(
                sql.Identifier(self.schema)
            ),
            (self.topic,),
        ).fetchall()
        self.conn.commit()
        return {r["partition"]: r["next_offset"] for r in rows}

    def _assign(self) -> None:
        """Become the schema's only writer, then seek every partition to its stored offset.

        The advisory lock makes a second projector on the same schema a hot standby: it waits
        here and takes over the moment the first one's connection dies (even by kill -9). Manual
        assignment (no consumer-group rebalance) means a restart resumes in milliseconds.
        """
        if self._assigned:
            return
        self.conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (projector_lock(self.schema),))
        self.conn.commit()
        stored = self.stored_offsets()
        partitions = partitions_of(self.consumer, self.topic, self.settings.kafka_timeout_s)
        self.consumer.assign([TopicPartition(self.topic, p, stored.get(p, OFFSET_BEGINNING)) for p in partitions])
        self.positions = {p: stored.get(p, 0) for p in partitions}
        self._assigned = True

    # -- the loop ---------------------------------------------------------------------------
    def run(self, until: Callable[["Projector"], bool] | None = None) -> None:
        """Project until ``stop()`` is called (or ``until(self)`` is true after a poll)."""
        self._assign()
        try:
            while not self.stop_event.is_set():
                messages = poll_batch(self.consumer, self.batch_size, timeout=0.1)
                if messages:
                    self.apply(messages)
                if until and until(self):
                    return
        finally:
            self.close()

    def run_until_caught_up(self, progress: Callable[["Projector"], None] | None = None) -> None:
        """Project everything written before this call, then return (used by rebuild and tests)."""
        self._assign()
        self.targets = high_watermarks(self.consumer, self.topic, self.settings.kafka_timeout_s)

        def caught_up(projector: "Projector") -> bool:
            if progress:
                progress(projector)
            return all(
                projector.positions.get(p, 0) >= high or p in projector.parked for p, high in self.targets.items()
            )

        self.run(until=caught_up)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.consumer.close()
        if self._dlq:
            self._dlq.close()
        self.conn.close()

    # -- one batch = one transaction --------------------------------------------------------
    def apply(self, messages: list[Message]) -> None:
        """One transaction for the batch; if PostgreSQL refuses it, the records go one by one so
        only the record at fault is dead-lettered."""
        try:
            self._apply(messages)
            self._dead_sent.clear()
        except psycopg.DataError as e:
            # a value PostgreSQL cannot hold (SQLSTATE class 22) is the record's fault; a constraint
            # (class 23) or anything else can be the schema's (e.g. a newer release's NOT NULL
            # column): those stop the projector, they never dead-letter a whole batch
            LOG.warning("batch refused by PostgreSQL (%s); writing its records one by one", e)
            for msg in messages:
                try:
                    self._apply([msg])
                except psycopg.DataError as one:
                    self.dead_letter(msg, f"cannot be projected: {type(one).__name__}: {one}".strip())
                    self.dead_lettered += 1
                    self._apply([msg], skip=True)
            self._dead_sent.clear()

    def _apply(self, messages: list[Message], skip: bool = False) -> None:
        events: list[tuple] = []
        upserts: list[Upsert] = []
        streams: dict[str, dict[str, Any]] = {}
        next_offsets: dict[int, int] = {}
        parked: dict[int, tuple[int, str]] = {}
        dead = 0
        for msg in messages:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    LOG.warning("consumer error: %s", msg.error())
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition in parked or partition in self.parked:
                continue  # a paused partition's records already fetched: read again after the upgrade
            if skip:
                next_offsets[partition] = offset + 1
                continue
            try:
                row, folded = self._rows(msg.value(), partition, offset)
            except NewerSchema as e:
                parked[partition] = (offset, str(e))
                continue
            except (DecodeError, ValueError, OverflowError, KeyError, TypeError) as e:
                self.dead_letter(msg, f"{type(e).__name__}: {e}" if not isinstance(e, DecodeError) else str(e))
                dead += 1
                next_offsets[partition] = offset + 1
                continue
            next_offsets[partition] = offset + 1
            events.append(row)
            upserts.extend(folded)
            self._track_stream(streams, row)
        if not next_offsets and not parked:
            return
        with self.conn.transaction():
            self._write(events, upserts, streams, next_offsets)
            self._park(parked)
        self.positions.update(next_offsets)
        self.projected += len(events)
        self.dead_lettered += dead
        if parked:
            self.consumer.pause([TopicPartition(self.topic, p) for p in parked])
            self.parked.update(parked)
            for p, (offset, reason) in parked.items():
                LOG.error("projection %s parked partition %d at offset %d: %s", self.schema, p, offset, reason)

    def _park(self, parked: dict[int, tuple[int, str]]) -> None:
        """Record parked partitions (for /health); a partition written past its parked offset by
        a newer projector is no longer parked."""
        schema = sql.Identifier(self.schema)
        for p, (offset, reason) in parked.items():
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {}.parked VALUES (%s, %s, %s, %s) ON CONFLICT (topic, partition)"
                    ' DO UPDATE SET "offset" = EXCLUDED."offset", reason = EXCLUDED.reason'
                ).format(schema),
                (self.topic, p, offset, reason),
            )

    def _rows(self, value: bytes | None, partition: int, offset: int) -> tuple[tuple, list[Upsert]]:
        """The record's events row and its read-model changes. A record no read model folds goes
        from its bytes straight to the row (``decode_json_fields``: no ``Envelope``, no payload
        dict walked twice); the rest, and whatever that path is unsure of, are decoded in full
        (which raises what the caller dead-letters or parks on)."""
        fields = self.codec.decode_json_fields(value)
        if fields is not None and not folds(fields[1]):
            (
                event_id,
                type_,
                stream_id,
                tenant_id,
                actor,
                sandbox_id,
                causation_id,
                correlation_id,
                occurred_at,
                version,
                payload,
            ) = fields
            return (
                partition,
                offset,
                stream_id,
                tenant_id,
                event_id,
                type_,
                pg_micros(occurred_at),
                actor,
                sandbox_id,
                causation_id,
                correlation_id,
                version,
                jsonb_wire(payload),
                occurred_at,
            ), []
        e = self.codec.decode(value)
        return self._event_row(e, partition, offset), fold(e, offset)

    @staticmethod
    def _event_row(e: Envelope, partition: int, offset: int) -> tuple:
        """EVENT_COLUMNS' values, then ``occurred_at`` in µs (for the streams table; not copied)."""
        return (
            partition,
            offset,
            e.stream_id,
            e.tenant_id,
            e.event_id,
            e.type,
            pg_micros(e.occurred_at),
            e.actor,
            e.sandbox_id,
            e.causation_id,
            e.correlation_id,
            e.schema_version,
            jsonb_wire(e.payload_json_text().encode()),
            e.occurred_at,
        )

    @staticmethod
    def _track_stream(streams: dict, row: tuple) -> None:
        partition, offset, stream_id, tenant_id, occurred_at = row[0], row[1], row[2], row[3], row[-1]
        s = streams.get(stream_id)
        if s is None:
            streams[stream_id] = {
                "tenant_id": tenant_id,
                "partition": partition,
                "first": offset,
                "last": offset,
                "count": 1,
                "created": occurred_at,
                "updated": occurred_at,
            }
        else:
            s["last"], s["count"], s["updated"] = offset, s["count"] + 1, occurred_at

    def _write(self, events, upserts, streams, next_offsets) -> None:
        schema = sql.Identifier(self.schema)
        cur = self.conn.cursor()
        if events:
            copy_sql = sql.SQL("COPY {}.events ({}) FROM STDIN (FORMAT BINARY)").format(
                schema, sql.SQL(",").join(map(sql.Identifier, EVENT_COLUMNS))
            )
            with cur.copy(copy_sql) as copy:
                copy.set_types(EVENT_TYPES)
                for row in events:
                    copy.write_row(row[:-1])  # without the trailing occurred_at µs
        if streams:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {}.streams VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (stream_id)"
                    " DO UPDATE SET last_offset = EXCLUDED.last_offset, event_count = streams.event_count"
                    " + EXCLUDED.event_count, updated_at = EXCLUDED.updated_at"
                ).format(schema),
                [
                    (
                        sid,
                        s["tenant_id"],
                        s["partition"],
                        s["first"],
                        s["last"],
                        s["count"],
                        from_micros(s["created"]),
                        from_micros(s["updated"]),
                    )
                    for sid, s in streams.items()
                ],
            )
        if upserts:
            with self.conn.pipeline():  # in order, without a round trip each
                for up in upserts:
                    cur.execute(self._upsert_statement(up), self._upsert_params(up))
        cur.executemany(
            sql.SQL(
                "INSERT INTO {}.consumer_offsets VALUES (%s,%s,%s) ON CONFLICT (topic, partition)"
                " DO UPDATE SET next_offset = EXCLUDED.next_offset"
            ).format(schema),
            [(self.topic, p, o) for p, o in next_offsets.items()],
        )
        cur.executemany(
            sql.SQL('DELETE FROM {}.parked WHERE topic = %s AND partition = %s AND "offset" < %s').format(schema),
            [(self.topic, p, o) for p, o in next_offsets.items()],
        )

    def _upsert_statement(self, up: Upsert) -> str:
        """The statement of an upsert's shape, composed once (psycopg's ``sql`` composition cost
        more than the statement's round trip)."""
        shape = (up.table, up.key, tuple(up.row), up.update, up.insert)
        statement = self._statements.get(shape)
        if statement is not None:
            return statement
        schema, table, key = sql.Identifier(self.schema), sql.Identifier(up.table), sql.Identifier(up.key)
        if not up.insert:
            composed = sql.SQL("UPDATE {}.{} SET {} WHERE {} = %s AND tenant_id = %s").format(
                schema, table, sql.SQL(",").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in up.update), key
            )
        else:
            action = (
                sql.SQL("DO UPDATE SET {}").format(
                    sql.SQL(",").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in up.update)
                )
                if up.update
                else sql.SQL("DO NOTHING")
            )
            composed = sql.SQL("INSERT INTO {}.{} ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
                schema,
                table,
                sql.SQL(",").join(map(sql.Identifier, up.row)),
                sql.SQL(",").join(sql.Placeholder() * len(up.row)),
                key,
                action,
            )
        statement = self._statements[shape] = composed.as_string(self.conn)
        return statement

    @staticmethod
    def _upsert_params(up: Upsert) -> list:
        if not up.insert:
            return [from_micros(up.row[c]) if c in TIME_COLUMNS else up.row[c] for c in up.update] + [
                up.row[up.key],
                up.row["tenant_id"],
            ]
        return [from_micros(v) if c in TIME_COLUMNS else v for c, v in up.row.items()]

    # -- dead letters -----------------------------------------------------------------------
    def dead_letter(self, msg: Message, reason: str) -> None:
        if (msg.partition(), msg.offset()) in self._dead_sent:
            return  # already sent by the first try of a batch now retried record by record
        self._dead_sent.add((msg.partition(), msg.offset()))
        LOG.warning("dead-lettering %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), reason)
        if self._dlq is None:
            self._dlq = EventProducer(self.settings, self.codec)
        self._dlq.dead_letter(msg, reason, f"projection-{self.schema}")
