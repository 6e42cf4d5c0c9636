import dataclasses
import io

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.utils import gen_data

from astraforge.errors import DecodeError, ValidationError
from astraforge.schemas import Envelope, SchemaRegistry, default_codec
from astraforge.schemas.codec import MARKER

CODEC = default_codec()
NAMED: dict = {}
parse_schema(CODEC.registry.current, NAMED, _force=True)


def sample(record_type: str, stream: str = "run-1") -> Envelope:
    payload = gen_data(NAMED[CODEC.registry.types[record_type].payload], NAMED)
    return Envelope(type=record_type, stream_id=stream, tenant_id="acme", actor="user:1", payload=payload)


@pytest.mark.parametrize("record_type", sorted(CODEC.registry.types))
def test_every_record_type_round_trips(record_type: str) -> None:
    envelope = sample(record_type)
    data = CODEC.encode(envelope)
    assert data[:2] == MARKER
    assert data[2:10] == CODEC.registry.fingerprint
    decoded = CODEC.decode(data)
    assert decoded == dataclasses.replace(envelope, schema_version=CODEC.registry.version)


def test_fingerprint_matches_the_avro_spec_test_vector() -> None:
    from astraforge.schemas.registry import schema_fingerprint

    # Avro spec: CRC-64-AVRO of the canonical form "int" is 0x7275d51a3f395c8f, written little-endian.
    assert schema_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_the_brief_names_every_record_kind() -> None:
    types = set(CODEC.registry.types)
    for required in [
        "sandbox.create",
        "sandbox.ready",
        "sandbox.exec",
        "exec.output",
        "exec.finished",
        "sandbox.file.write",
        "file.written",
        "diff.produced",
        "chat.message",
        "chat.delta",
        "tool.called",
        "artifact.stored",
        "egress.allowed",
        "egress.denied",
        "test.result",
        "review.decided",
        "merge_request.opened",
        "alert.received",
        "run.create",
        "run.running",
        "sandbox.snapshot",
        "snapshot.created",
    ]:
        assert required in types


def test_topic_kind_follows_the_schema_attribute() -> None:
    assert CODEC.topic_kind("sandbox.exec") == "commands"
    assert CODEC.topic_kind("exec.output") == "events"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "marker"),
        (b'{"json": true}', "marker"),
        (MARKER + b"\x00" * 8 + b"\x02", "fingerprint"),
    ],
)
def test_foreign_bytes_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        CODEC.decode(data)


def test_a_truncated_body_is_a_decode_error() -> None:
    data = CODEC.encode(sample("exec.output"))
    with pytest.raises(DecodeError, match="corrupt"):
        CODEC.decode(data[:-5])


def test_type_and_payload_must_agree() -> None:
    # A hand-made record whose type says exec.output but whose payload is a ChatMessage.
    good = sample("chat.message")
    datum = dataclasses.asdict(good) | {"type": "exec.output", "schema_version": 1}
    datum["payload"] = ("astraforge.ChatMessage", good.payload)
    buf = io.BytesIO(MARKER + CODEC.registry.fingerprint)
    buf.seek(0, 2)
    schemaless_writer(buf, CODEC.registry.current, datum)
    with pytest.raises(DecodeError, match=r"expected astraforge\.ExecOutput"):
        CODEC.decode(buf.getvalue())


def test_unknown_type_and_bad_payload_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="unknown record type"):
        CODEC.encode(Envelope(type="nope", stream_id="s", tenant_id="t", actor="a", payload={}))
    with pytest.raises(ValidationError, match="ChatMessage"):
        CODEC.encode(Envelope(type="chat.message", stream_id="s", tenant_id="t", actor="a", payload={"role": 1}))


def test_registry_refuses_a_type_claimed_twice(tmp_path) -> None:
    from astraforge.schemas.registry import AVRO_DIR

    for path in AVRO_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    clash = (tmp_path / "astraforge.ChatDelta.avsc").read_text().replace('"chat.delta"', '"chat.message"')
    (tmp_path / "astraforge.ChatDelta.avsc").write_text(clash)
    with pytest.raises(ValueError, match="claimed by two schemas"):
        SchemaRegistry.load(tmp_path, tmp_path)
