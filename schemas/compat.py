"""Compatibility checks: can a reader schema read everything a writer schema wrote?

Backward: the current schema reads every release. Forward: every release reads what the current
schema writes, for the record types that release knows (a record type added later is, by design,
unreadable to it: the projector parks on it instead of skipping it).

Avro resolution rules are applied by fastavro itself on generated data covering every union
branch, so the check is the real decoder, not a re-implementation of the rules.
"""

import io
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import gen_data


def _branches(schema: dict) -> list[dict]:
    return [b for b in schema["fields"][-1]["type"] if isinstance(b, dict)]


def _samples(writer: dict, per_branch: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Random records, forced through every payload branch (or those in ``only``) so no record type
    goes unchecked."""
    samples = []
    named: dict[str, Any] = {}
    parsed = parse_schema(writer, named, _force=True)
    for branch in _branches(writer):
        if only is not None and branch["name"] not in only:
            continue
        name = branch["name"]
        for record in (gen_data(named[name], named) for _ in range(per_branch)):
            base = gen_data(parsed, named)
            base["payload"] = (name, record)
            samples.append(base)
    return samples


def incompatibilities(reader: dict, writer: dict, per_branch: int = 5, known_only: bool = False) -> list[str]:
    """Problems found reading ``writer`` data with ``reader``; empty when compatible. With
    ``known_only``, only the payload record types the reader has are written (forward check)."""
    only = {b["name"] for b in _branches(reader)} if known_only else None
    samples = _samples(writer, per_branch, only)
    reader, writer = parse_schema(reader, _force=True), parse_schema(writer, _force=True)
    problems = []
    for datum in samples:
        buf = io.BytesIO()
        schemaless_writer(buf, writer, datum)
        buf.seek(0)
        try:
            schemaless_reader(buf, writer, reader)
        except Exception as e:
            problems.append(f"{datum['payload'][0]}: {type(e).__name__}: {e}")
    return sorted(set(problems))
