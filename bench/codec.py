"""Codec CPU cost per envelope: the compiled fast path (C, and the generated Python it falls back to
where the extension is not built) next to fastavro (the reference both fall back to), in one
process, as CPU time (wall clock on a shared machine says little).

usage: python bench/codec.py [--events N]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astraforge.schemas import Codec, default_codec
from bench.common import table
from bench.ingest import event


def cpu_us(fn, items) -> float:
    started = time.thread_time()
    for item in items:
        fn(item)
    return (time.thread_time() - started) / len(items) * 1e6


def json_fields_by(codec: Codec):
    def fields(data: bytes) -> tuple:
        e = codec.decode(data)
        return (e.event_id, e.type, e.stream_id, e.tenant_id, e.payload_json_text())

    return fields


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    n = parser.parse_args().events
    codec = default_codec()
    reference = Codec(codec.registry, compiled=False)
    python = Codec(codec.registry, accelerated=False)
    envelopes = [event(i) for i in range(n)]
    encoded = [codec.encode(e) for e in envelopes]
    assert [reference.encode(e) for e in envelopes[:1000]] == encoded[:1000]
    assert [python.encode(e) for e in envelopes[:1000]] == encoded[:1000]
    rows = [("per envelope (CPU µs)", "fastavro", "generated Python", "C", "C vs fastavro")]
    for name, method, items in (
        ("encode", "encode", envelopes),
        ("decode (an Envelope)", "decode", encoded),
        ("decode to JSON fields (projector)", "decode_json_fields", encoded),
    ):
        # fastavro has no JSON-fields path: its equivalent is the full decode plus the payload's JSON
        slow_fn = getattr(reference, method) if method != "decode_json_fields" else json_fields_by(reference)
        slow = cpu_us(slow_fn, items)
        generated, fast = cpu_us(getattr(python, method), items), cpu_us(getattr(codec, method), items)
        rows.append((name, f"{slow:.1f}", f"{generated:.1f}", f"{fast:.1f}", f"{slow / fast:.1f}x"))
    print(f"codec, {n:,} exec.output envelopes of {len(encoded[0])} bytes")
    print(table(rows))


if __name__ == "__main__":
    main()
