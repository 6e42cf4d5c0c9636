"""The compiled fast path writes the bytes fastavro writes and reads the values fastavro reads;
what it does not take, it refuses (the codec then asks fastavro)."""

import contextlib
import io
import json
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import gen_data

from astraforge.api import frames
from astraforge.errors import ValidationError
from astraforge.kafka import Positioned
from astraforge.schemas import Envelope, default_codec
from astraforge.schemas.codec import ENVELOPE_FIELDS, HEADER_LEN, JSON_FIELDS, MARKER, Codec
from astraforge.schemas.compiled import Unhandled, _native, envelope_reader, envelope_writer

CODEC = default_codec()
CURRENT = CODEC.registry.current
WRITER_FORM = CODEC.registry.writers[CODEC.registry.fingerprint]
NAMED: dict = {}
parse_schema(CURRENT, NAMED, _force=True)
VERSION = CODEC.registry.version


@dataclass(frozen=True)
class FastPath:
    """One implementation of the fast path: the C extension or the generated Python."""

    accelerated: bool
    write: Callable
    read: Callable
    codec: Codec


PATHS = {
    flag: FastPath(
        flag,
        envelope_writer(CURRENT, flag),
        envelope_reader(WRITER_FORM, flag),
        Codec(CODEC.registry, accelerated=flag),
    )
    for flag in (True, False)
}


@pytest.fixture(params=[True, False], ids=["c", "python"])
def fast(request: pytest.FixtureRequest) -> FastPath:
    return PATHS[request.param]


def test_the_c_extension_is_built_and_is_what_the_codec_uses() -> None:
    assert _native is not None, "astraforge._native did not build: `make install` needs a C compiler"
    assert CODEC._write.func is _native.write_envelope


def test_the_c_extension_is_not_older_than_its_source() -> None:
    """The build is optional: one that failed (a new compiler warning, -Werror) kept the extension
    built before, and the tests ran that one. ``make install`` removes it before building."""
    source = Path(_native.__file__).with_name("_native.c")
    assert Path(_native.__file__).stat().st_mtime >= source.stat().st_mtime, "stale build: run `make install`"


def record_name(record_type: str) -> str:
    return CODEC.registry.types[record_type].payload


def fastavro_bytes(e: Envelope) -> bytes:
    datum = {name: getattr(e, name) for name in ENVELOPE_FIELDS} | {"schema_version": VERSION}
    datum["payload"] = (record_name(e.type), e.payload)
    buf = io.BytesIO()
    schemaless_writer(buf, CURRENT, datum)
    return buf.getvalue()


def fastavro_datum(body: bytes) -> dict:
    return schemaless_reader(
        io.BytesIO(body), WRITER_FORM, None, return_record_name=True, return_record_name_override=True
    )


def compiled_bytes(fast: FastPath, e: Envelope) -> bytes:
    out = bytearray()
    fast.write(e, VERSION, record_name(e.type), out)
    return bytes(out)


def samples(record_type: str, count: int = 20) -> list[Envelope]:
    """Seeded, so every run checks the same values (full-range ints, unicode, nulls and not)."""
    rng_state = random.getstate()
    random.seed(f"{record_type}-compiled")
    try:
        payloads = [gen_data(NAMED[record_name(record_type)], NAMED) for _ in range(count)]
    finally:
        random.setstate(rng_state)
    return [
        Envelope(
            type=record_type,
            stream_id=f"s{i}" * (i * 7),
            tenant_id="t",
            actor="a" * i,
            payload=p,
            sandbox_id=None if i % 2 else f"sb-{i}",
            causation_id="c" * 70 if i % 3 else None,
            occurred_at=[0, 1, 63, 64, -1, 2**62, 1_796_000_000_000_000][i % 7],
        )
        for i, p in enumerate(payloads)
    ]


@pytest.mark.parametrize("record_type", sorted(CODEC.registry.types))
def test_compiled_code_writes_and_reads_what_fastavro_does(fast: FastPath, record_type: str) -> None:
    for envelope in samples(record_type):
        body = fastavro_bytes(envelope)
        assert compiled_bytes(fast, envelope) == body
        datum, end = fast.read(body, 0)
        assert end == len(body)
        assert datum == fastavro_datum(body)


def test_long_values_take_multi_byte_lengths(fast: FastPath) -> None:
    payload = {
        "command_id": "é" * 300,
        "stream": "stderr",
        "seq": -(2**63),
        "data": bytes(range(256)) * 300,
        "artifact": {
            "key": "k",
            "sha256": "0" * 64,
            "size": 2**40,
            "artifact_id": "x",
            "content_type": "text/plain",
            "name": None,
        },
    }
    envelope = Envelope(type="exec.output", stream_id="s", tenant_id="t", actor="a", payload=payload)
    body = fastavro_bytes(envelope)
    assert compiled_bytes(fast, envelope) == body
    assert fast.read(body, 0) == (fastavro_datum(body), len(body))


LONG_RECORD = {"type": "record", "name": "t.Long", "fields": [{"name": "n", "type": "long"}]}


@pytest.mark.parametrize(
    "varint",
    [
        bytes([0xFF] * 9 + [0x01]),  # -2**63: the last byte holds bit 63 only
        bytes([0xFE] * 9 + [0x01]),
        bytes([0xFF] * 9 + [0x7F]),  # bits past the 64th: fastavro drops them
        bytes([0xFE] * 9 + [0x03]),
    ],
)
def test_a_ten_byte_long_is_refused_or_read_as_fastavro_reads_it(fast: FastPath, varint: bytes) -> None:
    read = envelope_reader(LONG_RECORD, fast.accelerated)
    expected = schemaless_reader(io.BytesIO(varint), parse_schema(LONG_RECORD))
    with contextlib.suppress(Unhandled):  # refusing is fine: the codec then asks fastavro
        assert read(varint, 0) == (expected, len(varint))


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("seq", 3.0),  # a float where a long goes: fastavro refuses
        ("seq", True),  # a bool is an int to fastavro: it writes 1
        ("seq", 2**63),  # past a long
        ("stream", "stdin"),  # not a symbol
        ("data", "text"),  # str where bytes go
        ("data", bytearray(b"ab")),
        ("artifact", ("astraforge.ArtifactRef", None)),  # tuple notation
        ("command_id", None),
    ],
)
def test_values_the_fast_path_does_not_take_go_to_fastavro(fast: FastPath, change: str, value: object) -> None:
    payload = {"command_id": "c", "stream": "stdout", "seq": 1, "data": b"x", "artifact": None, change: value}
    envelope = Envelope(type="exec.output", stream_id="s", tenant_id="t", actor="a", payload=payload)
    with pytest.raises(Unhandled):
        compiled_bytes(fast, envelope)
    try:
        expected = MARKER + CODEC.registry.fingerprint + fastavro_bytes(envelope)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        with pytest.raises(ValidationError):
            fast.codec.encode(envelope)
    else:
        assert fast.codec.encode(envelope) == expected


def test_a_datetime_timestamp_is_written_by_fastavro(fast: FastPath) -> None:
    when = datetime(2026, 11, 30, 1, 2, 3, 456789, tzinfo=UTC)
    envelope = samples("chat.message", 1)[0]
    dated = Envelope(**{**{n: getattr(envelope, n) for n in ENVELOPE_FIELDS}, "occurred_at": when})
    micros = Envelope(**{**{n: getattr(envelope, n) for n in ENVELOPE_FIELDS}, "occurred_at": 1_796_000_000_000_000})
    assert fast.codec.decode(fast.codec.encode(dated)).occurred_at == int(when.timestamp() * 1_000_000)
    assert fast.codec.encode(micros)[HEADER_LEN:] == fastavro_bytes(micros)


@pytest.mark.parametrize("record_type", ["exec.output", "sandbox.create", "chat.message", "run.create"])
def test_a_truncated_or_damaged_body_is_refused_or_read_as_fastavro_reads_it(fast: FastPath, record_type: str) -> None:
    body = fastavro_bytes(samples(record_type, 3)[2])
    damaged = [body[:cut] for cut in range(len(body))]
    bad_bytes = (0x00, 0x01, 0x03, 0x7F, 0x80, 0xFF)  # zero, negative lengths, a varint that goes on
    damaged += [body[:i] + bytes([b]) + body[i + 1 :] for i in range(len(body)) for b in bad_bytes]
    for data in damaged:
        try:
            datum, end = fast.read(data, 0)
        except (Unhandled, IndexError, ValueError, struct.error):
            continue
        if end > len(data):
            continue  # the codec refuses a read past the end
        assert datum == fastavro_datum(data)


def test_a_missing_field_without_default_is_left_to_fastavro(fast: FastPath) -> None:
    # inside a [null, record] union fastavro refuses a record missing a field that has no default,
    # even a nullable one; at the top it writes null. The fast path leaves both to fastavro.
    inner = {"type": "record", "name": "t.Inner", "fields": [{"name": "x", "type": ["null", "string"]}]}
    fields = [{"name": "inner", "type": ["null", inner]}, {"name": "y", "type": ["null", "string"]}]
    outer = {"type": "record", "name": "t.Outer", "fields": fields}
    envelope_fields = [{"name": "type", "type": "string"}, {"name": "payload", "type": [outer]}]
    schema = parse_schema({"type": "record", "name": "t.Envelope", "fields": envelope_fields})
    write = envelope_writer(schema, fast.accelerated)
    for payload in ({"inner": {}, "y": "a"}, {"inner": None}):
        envelope = Envelope(type="t", stream_id="s", tenant_id="t", actor="a", payload=payload)
        with pytest.raises((Unhandled, KeyError)):
            write(envelope, 1, "t.Outer", bytearray())
    complete = Envelope(type="t", stream_id="s", tenant_id="t", actor="a", payload={"inner": {"x": None}, "y": None})
    out = bytearray()
    write(complete, 1, "t.Outer", out)
    buf = io.BytesIO()
    schemaless_writer(buf, schema, {"type": "t", "payload": ("t.Outer", complete.payload)})
    assert bytes(out) == buf.getvalue()


def full_path_fields(fast: FastPath, data: bytes) -> tuple:
    """What ``decode_json_fields`` must equal: the full decode, its payload as a JSON value (the
    text is orjson's on one side and json's on the other: the projection stores the value)."""
    e = fast.codec.decode(data)
    return tuple(json.loads(e.payload_json_text()) if n == "payload" else getattr(e, n) for n in JSON_FIELDS)


def parsed(fields: tuple) -> tuple:
    """``decode_json_fields``' tuple with its payload parsed (UTF-8 JSON bytes)."""
    return (*fields[:-1], json.loads(fields[-1]))


@pytest.mark.parametrize("record_type", sorted(CODEC.registry.types))
def test_json_fields_are_what_the_full_decode_gives(fast: FastPath, record_type: str) -> None:
    for envelope in samples(record_type):
        data = fast.codec.encode(envelope)
        fields = fast.codec.decode_json_fields(data)
        if fields is not None:  # generated text with NUL is left to the full path
            assert parsed(fields) == full_path_fields(fast, data)


def test_json_fields_of_binary_and_text_output(fast: FastPath) -> None:
    base = {"command_id": "c", "stream": "stdout", "seq": 1, "artifact": None}
    for data in (b'plain \xc3\xa9 text "quoted"\n', b"\xff\xfe binary", b"nul \x00 inside", b""):
        envelope = Envelope(type="exec.output", stream_id="s", tenant_id="t", actor="a", payload={**base, "data": data})
        encoded = fast.codec.encode(envelope)
        assert parsed(fast.codec.decode_json_fields(encoded)) == full_path_fields(fast, encoded)


@pytest.mark.parametrize(
    "body",
    [
        {"message_id": "m", "role": "agent", "text": "a NUL \x00 in text"},  # to_json base64s it
        {"message_id": "m", "role": "agent\x00", "text": "x"},
    ],
)
def test_json_fields_leave_text_with_nul_to_the_full_path(fast: FastPath, body: dict) -> None:
    data = fast.codec.encode(Envelope(type="chat.message", stream_id="s", tenant_id="t", actor="a", payload=body))
    assert fast.codec.decode_json_fields(data) is None
    assert fast.codec.decode(data).payload_json()  # still readable in full


def test_json_fields_refuse_what_decode_would_refuse_or_resolve(fast: FastPath) -> None:
    envelope = samples("exec.output", 1)[0]
    data = fast.codec.encode(envelope)
    old_writer = data[:2] + bytes(8) + data[HEADER_LEN:]  # another fingerprint: resolution is fastavro's
    mismatched = fast.codec.encode(
        Envelope(
            **{
                **{n: getattr(envelope, n) for n in ENVELOPE_FIELDS},
                "type": "chat.message",
                "payload": {"message_id": "m", "role": "r", "text": "t"},
            }
        )
    )
    wrong_type = mismatched.replace(b"chat.message", b"exec.outputx"[:12])  # ExecOutput body under another type
    for bad in (None, b"", data[:-1], data + b"\x00", old_writer, wrong_type, b"\xc3\x02" + data[2:]):
        assert fast.codec.decode_json_fields(bad) is None


def finished(duration_ms: float) -> Envelope:
    payload = {"command_id": "c", "exit_code": 0, "duration_ms": duration_ms, "timed_out": False}
    payload |= {"cancelled": False, "truncated": False, "error": None}
    return Envelope(type="exec.finished", stream_id="s", tenant_id="t", actor="a", payload=payload)


@pytest.mark.parametrize("duration_ms", [math.nan, math.inf, -math.inf])
def test_json_fields_leave_a_double_json_cannot_hold_to_the_full_path(fast: FastPath, duration_ms: float) -> None:
    data = fast.codec.encode(finished(duration_ms))
    assert fast.codec.decode_json_fields(data) is None
    decoded = fast.codec.decode(data).payload["duration_ms"]  # the full path still reads it
    assert decoded == duration_ms or (math.isnan(decoded) and math.isnan(duration_ms))


@pytest.mark.parametrize("duration_ms", [math.nan, math.inf, -math.inf])
def test_the_full_path_writes_a_double_json_cannot_hold_as_the_live_frame_shows_it(duration_ms: float) -> None:
    """null, as orjson writes the SSE frame: json wrote ``NaN``, which jsonb refuses (dead-lettered)."""
    e = finished(duration_ms)
    frame = frames.from_record(Positioned(0, 0, e))
    shown = orjson.loads(frame.split("data: ", 1)[1])["payload"]
    assert orjson.loads(e.payload_json_text()) == shown
    assert shown["duration_ms"] is None


def test_json_fields_carry_doubles_as_their_values(fast: FastPath) -> None:
    for duration_ms in (1e16, 1e-7, -0.0, 0.1 + 0.2, 2.5):
        data = fast.codec.encode(finished(duration_ms))
        assert json.loads(fast.codec.decode_json_fields(data)[-1])["duration_ms"] == duration_ms
