"""Every released envelope schema must stay readable by the current one (backward compatible)."""

import copy
import dataclasses

import pytest

from astraforge.schemas import Codec, SchemaRegistry
from astraforge.schemas.compat import incompatibilities

REGISTRY = SchemaRegistry.load()


def test_the_current_schema_is_released() -> None:
    """A schema change must be released (`astraforge schemas release`) so readers know its fingerprint."""
    assert REGISTRY.version in REGISTRY.releases, "run `astraforge schemas release` after changing schemas/avro"


@pytest.mark.parametrize("version", sorted(REGISTRY.releases))
def test_current_reads_every_release(version: int) -> None:
    assert incompatibilities(REGISTRY.current, REGISTRY.releases[version]) == []


@pytest.mark.parametrize("version", sorted(REGISTRY.releases))
def test_every_release_reads_what_the_current_schema_writes(version: int) -> None:
    """Forward: an older reader (a projector not yet upgraded) reads the record types it knows."""
    assert incompatibilities(REGISTRY.releases[version], REGISTRY.current, known_only=True) == []


def test_a_field_removed_without_default_breaks_forward_compatibility() -> None:
    newer = copy.deepcopy(REGISTRY.current)
    (branch,) = [
        b for b in newer["fields"][-1]["type"] if isinstance(b, dict) and b["name"] == "astraforge.ChatMessage"
    ]
    branch["fields"] = [f for f in branch["fields"] if f["name"] != "text"]  # the current reader needs it
    assert any("ChatMessage" in p for p in incompatibilities(REGISTRY.current, newer, known_only=True))


def _field(schema: dict, record: str, field: str) -> dict:
    branch = next(b for b in schema["fields"][-1]["type"] if isinstance(b, dict) and b["name"] == record)
    return next(f for f in branch["fields"] if f["name"] == field)


def test_a_changed_field_type_is_caught() -> None:
    broken = copy.deepcopy(REGISTRY.current)
    _field(broken, "astraforge.ExecOutput", "seq")["type"] = "string"
    assert any("ExecOutput" in p for p in incompatibilities(broken, REGISTRY.releases[1]))


def test_a_new_field_without_default_is_caught() -> None:
    broken = copy.deepcopy(REGISTRY.current)
    branch = next(
        b for b in broken["fields"][-1]["type"] if isinstance(b, dict) and b["name"] == "astraforge.ChatMessage"
    )
    branch["fields"].append({"name": "mood", "type": "string"})
    assert any("ChatMessage" in p for p in incompatibilities(broken, REGISTRY.releases[1]))


def test_a_new_field_with_default_is_compatible() -> None:
    evolved = copy.deepcopy(REGISTRY.current)
    branch = next(
        b for b in evolved["fields"][-1]["type"] if isinstance(b, dict) and b["name"] == "astraforge.ChatMessage"
    )
    branch["fields"].append({"name": "mood", "type": "string", "default": "calm"})
    assert incompatibilities(evolved, REGISTRY.releases[1]) == []


def test_records_from_an_older_writer_decode_with_defaults(tmp_path) -> None:
    """End to end through the codec: an old writer's bytes, a newer reader, the new field defaulted."""
    from astraforge.schemas.registry import AVRO_DIR, HISTORY_DIR

    for path in AVRO_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    old = Codec(SchemaRegistry.load(tmp_path, HISTORY_DIR))
    chat = tmp_path / "astraforge.ChatMessage.avsc"
    chat.write_text(
        chat.read_text().replace('"fields": [', '"fields": [{"name": "mood", "type": "string", "default": "calm"},', 1)
    )
    history = tmp_path / "history"
    history.mkdir()
    for path in HISTORY_DIR.glob("*.avsc"):
        (history / path.name).write_text(path.read_text())
    new = Codec(SchemaRegistry.load(tmp_path, history))
    assert new.registry.fingerprint != old.registry.fingerprint
    from tests.support import chat as chat_event

    envelope = chat_event("s", "t", "hello")
    decoded = new.decode(old.encode(envelope))
    assert decoded.payload == {**envelope.payload, "mood": "calm"}
    assert dataclasses.replace(decoded, payload=envelope.payload, schema_version=0) == envelope
