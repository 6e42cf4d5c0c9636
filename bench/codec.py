"""Codec CPU cost per envelope: the compiled fast path next to fastavro (the reference it falls
back to), in one process, as CPU time (wall clock on a shared machine says little).

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    n = parser.parse_args().events
    codec = default_codec()
    reference = Codec(codec.registry, compiled=False)
    envelopes = [event(i) for i in range(n)]
    encoded = [codec.encode(e) for e in envelopes]
    assert [reference.encode(e) for e in envelopes[:1000]] == encoded[:1000]
    rows = [("per envelope (CPU µs)", "fastavro", "compiled", "speed-up")]
    for name, slow, fast, items in (
        ("encode", reference.encode, codec.encode, envelopes),
        ("decode", reference.decode, codec.decode, encoded),
    ):
        before, after = cpu_us(slow, items), cpu_us(fast, items)
        rows.append((name, f"{before:.1f}", f"{after:.1f}", f"{before / after:.1f}x"))
    print(f"codec, {n:,} exec.output envelopes of {len(encoded[0])} bytes")
    print(table(rows))


if __name__ == "__main__":
    main()
