"""Avro single-object encoding of envelopes: ``C3 01`` + 8-byte fingerprint + Avro binary body.

Readers look the writer schema up by fingerprint (current or any released version) and resolve it
against the current schema, so records written by older code stay readable forever.
"""

import base64
import io
import struct
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from fastavro import schemaless_reader, schemaless_writer

from astraforge.errors import DecodeError, NewerSchema, ValidationError
from astraforge.ids import new_id, now_micros
from astraforge.schemas.compiled import Unhandled, envelope_json_reader, envelope_reader, envelope_writer, json_bytes
from astraforge.schemas.registry import SchemaRegistry

MARKER = b"\xc3\x01"
HEADER_LEN = len(MARKER) + 8


@dataclass(frozen=True, slots=True)
class Envelope:
    """One AstraForge record. ``payload`` is a plain dict of the record named by ``type``."""

    type: str
    stream_id: str
    tenant_id: str
    actor: str
    payload: dict[str, Any]
    sandbox_id: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None
    event_id: str = field(default_factory=new_id)
    occurred_at: int = field(default_factory=now_micros)
    schema_version: int = 0  # filled in by the codec on encode

    def payload_json(self) -> dict[str, Any]:
        """The payload as JSON-safe values (bytes become text, or ``{"base64": ...}`` when binary)."""
        return to_json(self.payload)

    def payload_json_text(self) -> str:
        """``payload_json()`` serialised as the live tail's SSE frames carry it (orjson: NaN and
        infinity become null there, and jsonb refuses them: json's ``NaN`` got the record dead-lettered,
        so an event shown live was gone on reconnect). orjson walks the payload itself; only text
        with NUL takes the slower walk that base64s it."""
        text = orjson.dumps(self.payload, default=_bytes_to_json)
        if b"\\u0000" in text:
            text = orjson.dumps(to_json(self.payload))
        return text.decode()


ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope))
# what ``Codec.decode_json_fields`` returns, in this order (the payload as JSON text)
JSON_FIELDS = (
    "event_id", "type", "stream_id", "tenant_id", "actor", "sandbox_id", "causation_id", "correlation_id",
    "occurred_at", "schema_version", "payload",
)  # fmt: skip


def _bytes_to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return to_json(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> Any:
    """JSON-safe copy of a decoded Avro value. Text with NUL (which jsonb rejects) goes base64 too."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return json_bytes(value)
    if isinstance(value, str) and "\x00" in value:
        return {"base64": base64.b64encode(value.encode()).decode()}
    return value


class Codec:
    """Encodes and decodes envelopes against one ``SchemaRegistry``.

    Records of the current schema go through code compiled from it (``schemas.compiled``: C when
    built, ``accelerated=False`` for its generated Python); a value or body that code does not take,
    and every older writer schema, go through fastavro. With ``compiled=False`` everything does (the
    reference, for comparisons).
    """

    def __init__(self, registry: SchemaRegistry, compiled: bool = True, accelerated: bool | None = None) -> None:
        self.registry = registry
        self._header = MARKER + registry.fingerprint
        self._version = registry.version
        current = registry.writers[registry.fingerprint]
        self._write = envelope_writer(registry.current, accelerated) if compiled else None
        self._read = envelope_reader(current, accelerated) if compiled else None
        self._read_json = envelope_json_reader(current, JSON_FIELDS, accelerated) if compiled else None
        self._payload_names = {name: t.payload for name, t in registry.types.items()}

    def topic_kind(self, record_type: str) -> str:
        """``commands`` or ``events``: where a record of this type belongs."""
        return self._record_type(record_type).topic

    def _record_type(self, record_type: str):
        try:
            return self.registry.types[record_type]
        except KeyError:
            raise ValidationError(f"unknown record type {record_type!r}") from None

    def encode(self, envelope: Envelope) -> bytes:
        """Validate and encode; raises ``ValidationError`` naming what is wrong."""
        payload_record = self._record_type(envelope.type).payload
        if self._write is not None:
            out = bytearray(self._header)
            try:
                self._write(envelope, self._version, payload_record, out)
                return bytes(out)
            except Exception:  # whatever the fast path does not take, fastavro decides (and words the error)
                pass
        datum = {name: getattr(envelope, name) for name in ENVELOPE_FIELDS}  # asdict() deep-copies: 20x slower
        datum["schema_version"] = self._version
        datum["payload"] = (payload_record, envelope.payload)
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            schemaless_writer(buf, self.registry.current, datum)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
            raise ValidationError(f"{envelope.type}: payload does not match {payload_record}: {e}") from e
        return buf.getvalue()

    def decode(self, data: bytes | None) -> Envelope:
        """Decode one record; raises ``DecodeError`` with the reason for anything not ours."""
        if not data or len(data) < HEADER_LEN or data[:2] != MARKER:
            raise DecodeError("not Avro single-object encoding (missing C3 01 marker)")
        fp = data[2:HEADER_LEN]
        writer = self.registry.writers.get(fp)
        if writer is None:
            raise NewerSchema(f"unknown writer schema fingerprint {fp.hex()} (written by a newer release?)")
        datum = None
        if fp == self.registry.fingerprint and self._read is not None:
            try:
                datum, end = self._read(data, HEADER_LEN)
                if end > len(data):
                    datum = None  # read past the end: truncated, fastavro says how
            except (Unhandled, IndexError, ValueError, struct.error):
                datum = None
        if datum is None:
            datum = self._read_fastavro(data, writer, fp)
        record_name, payload = datum.pop("payload")
        expected = self._record_type_or_decode_error(datum["type"])
        if record_name != expected:
            raise DecodeError(f"type {datum['type']} carries {record_name}, expected {expected}")
        occurred_at = datum.pop("occurred_at")
        if isinstance(occurred_at, datetime):
            occurred_at = int(occurred_at.timestamp() * 1_000_000)
        return Envelope(payload=payload, occurred_at=occurred_at, **datum)

    def decode_json_fields(self, data: bytes | None) -> tuple | None:
        """The record's ``JSON_FIELDS`` as a tuple, its payload as UTF-8 JSON bytes (the value
        ``payload_json`` gives, written by orjson: compact, non-ASCII as is), without building an
        ``Envelope`` (the projector's and the live tail's hot path: ~5x cheaper than ``decode`` +
        JSON). ``None`` whenever that path is unsure (another writer schema, an odd body or value, a
        double that JSON cannot hold, a type that does not match its payload): ``decode`` then says
        what the record is, or why it is refused."""
        if self._read_json is None or not data or data[:HEADER_LEN] != self._header:
            return None
        try:
            values, end = self._read_json(data, HEADER_LEN)
        except (Unhandled, IndexError, ValueError, struct.error):
            return None
        record_name, payload = values[-1]
        if end != len(data) or self._payload_names.get(values[1]) != record_name:
            return None
        try:
            text = orjson.dumps(payload)
        except orjson.JSONEncodeError:  # nested past orjson's depth: the slow path decides
            return None
        if b"\\u0000" in text:  # a NUL in a map key: the slow path decides
            return None
        return (*values[:-1], text)

    def _read_fastavro(self, data: bytes, writer: dict, fp: bytes) -> dict:
        reader = None if fp == self.registry.fingerprint else self.registry.current
        try:
            return schemaless_reader(
                io.BytesIO(data[HEADER_LEN:]), writer, reader, return_record_name=True, return_record_name_override=True
            )
        except Exception as e:  # fastavro raises many kinds for truncated or corrupt bodies
            raise DecodeError(f"corrupt Avro body: {type(e).__name__}: {e}") from e

    def _record_type_or_decode_error(self, record_type: str) -> str:
        try:
            return self.registry.types[record_type].payload
        except KeyError:
            raise NewerSchema(f"unknown record type {record_type!r} (written by a newer release?)") from None


@lru_cache
def default_codec() -> Codec:
    """The codec over the schemas shipped in this package."""
    return Codec(SchemaRegistry.load())
