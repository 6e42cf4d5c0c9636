"""Loads the current Avro schemas and the released history, keyed by fingerprint.

Writer schemas are found by the CRC-64-AVRO fingerprint of their Parsing Canonical Form (what
single-object encoding carries); no schema-registry server is involved.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

HERE = Path(__file__).resolve().parent
AVRO_DIR = HERE / "avro"
HISTORY_DIR = HERE / "history"
ENVELOPE = "astraforge.Envelope"
TYPES_ATTRIBUTE = "astraforge.types"


def schema_fingerprint(schema: Any) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint, as written after the C3 01 marker."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@dataclass(frozen=True)
class RecordType:
    """One record type (``exec.output``): its payload record and the topic kind it belongs on."""

    name: str
    payload: str
    topic: str  # "commands" | "events"


@dataclass
class SchemaRegistry:
    """The current envelope schema, every released one, and the type -> payload map."""

    current: dict
    fingerprint: bytes
    types: dict[str, RecordType]
    writers: dict[bytes, dict] = field(default_factory=dict)
    releases: dict[int, dict] = field(default_factory=dict)

    @property
    def version(self) -> int:
        """The envelope's ``schema_version``: the release whose fingerprint matches the current one."""
        for version, schema in self.releases.items():
            if schema_fingerprint(schema) == self.fingerprint:
                return version
        return max(self.releases, default=0) + 1

    @classmethod
    def load(cls, avro_dir: Path = AVRO_DIR, history_dir: Path = HISTORY_DIR) -> "SchemaRegistry":
        current = load_schema(str(avro_dir / f"{ENVELOPE}.avsc"))
        types: dict[str, RecordType] = {}
        for path in sorted(avro_dir.glob("*.avsc")):
            raw = json.loads(path.read_text())
            for type_name, topic in raw.get(TYPES_ATTRIBUTE, {}).items():
                if type_name in types:
                    raise ValueError(f"record type {type_name} is claimed by two schemas")
                types[type_name] = RecordType(type_name, f"{raw['namespace']}.{raw['name']}", topic)
        fp = schema_fingerprint(current)
        registry = cls(current=current, fingerprint=fp, types=types)
        registry.writers[fp] = _writer_form(current)
        for path in sorted(history_dir.glob(f"{ENVELOPE}.v*.avsc")):
            version = int(path.name.removeprefix(f"{ENVELOPE}.v").removesuffix(".avsc"))
            released = parse_schema(json.loads(path.read_text()), _force=True)
            registry.releases[version] = released
            registry.writers.setdefault(schema_fingerprint(released), _writer_form(released))
        return registry

    def release(self, history_dir: Path = HISTORY_DIR) -> Path | None:
        """Write the current schema into history as the next version, unless it is already there.

        History keeps the Parsing Canonical Form (pretty-printed): all a writer schema needs.
        """
        if any(schema_fingerprint(s) == self.fingerprint for s in self.releases.values()):
            return None
        version = max(self.releases, default=0) + 1
        path = history_dir / f"{ENVELOPE}.v{version}.avsc"
        path.write_text(json.dumps(json.loads(to_parsing_canonical_form(self.current)), indent=2) + "\n")
        return path


def _writer_form(schema: dict) -> dict:
    """The canonical form, parsed: decoding with it yields raw longs for timestamps (no datetime)."""
    return parse_schema(json.loads(to_parsing_canonical_form(schema)), _force=True)
