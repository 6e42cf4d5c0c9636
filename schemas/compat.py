"""Backward-compatibility check: can a reader schema read everything a writer schema wrote?

Avro resolution rules are applied by fastavro itself on generated data covering every union
branch, so the check is the real decoder, not a re-implementation of the rules.
"""

import io
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import gen_data


def _samples(writer: dict, per_branch: int) -> list[dict[str, Any]]:
    """Random records, forced through every payload branch so no record type goes unchecked."""
    samples = []
    named: dict[str, Any] = {}
    parsed = parse_schema(writer, named, _force=True)
    branches = [b for b in writer["fields"][-1]["type"] if isinstance(b, dict)]
    for branch in branches:
        name = branch["name"]
        for record in (gen_data(named[name], named) for _ in range(per_branch)):
            base = gen_data(parsed, named)
            base["payload"] = (name, record)
            samples.append(base)
    return samples


def incompatibilities(reader: dict, writer: dict, per_branch: int = 5) -> list[str]:
    """Problems found reading ``writer`` data with ``reader``; empty when compatible."""
    reader, writer = parse_schema(reader, _force=True), parse_schema(writer, _force=True)
    problems = []
    for datum in _samples(writer, per_branch):
        buf = io.BytesIO()
        schemaless_writer(buf, writer, datum)
        buf.seek(0)
        try:
            schemaless_reader(buf, writer, reader)
        except Exception as e:
            problems.append(f"{datum['payload'][0]}: {type(e).__name__}: {e}")
    return sorted(set(problems))
