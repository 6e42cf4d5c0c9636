"""Fuzz the codec's fast paths by hand (not collected by pytest: random, and minutes long).

Random mutations of valid bodies of every record type go through the C reader, the generated
Python reader and fastavro. A fast path may refuse what the reference reads (the codec then asks
fastavro) but never read a body differently; ``decode`` raises only ``DecodeError``/``NewerSchema``;
``decode_json_fields`` equals the full decode; ``frames.from_bytes`` never raises.

usage: python tests/fuzz/fuzz_codec.py [seed] [cases]
       PYTHONMALLOC=debug python -X dev -W error tests/fuzz/fuzz_codec.py 11 150000
"""

import io
import json
import random
import resource
import struct
import sys
import time

from fastavro import parse_schema, schemaless_reader
from fastavro.utils import gen_data

from astraforge.api import frames
from astraforge.errors import DecodeError, NewerSchema
from astraforge.schemas import Envelope, default_codec
from astraforge.schemas.codec import HEADER_LEN, JSON_FIELDS, Codec
from astraforge.schemas.compiled import Unhandled

REGISTRY = default_codec().registry
C = Codec(REGISTRY, accelerated=True)
PY = Codec(REGISTRY, accelerated=False)
WRITER = REGISTRY.writers[REGISTRY.fingerprint]
INTERESTING = [0, 1, 2, 0x3F, 0x40, 0x7F, 0x80, 0x81, 0xFE, 0xFF]


def valid_bodies() -> list[bytes]:
    named: dict = {}
    parse_schema(REGISTRY.current, named, _force=True)
    bodies = []
    for record_type in sorted(REGISTRY.types):
        for i in range(8):
            payload = gen_data(named[REGISTRY.types[record_type].payload], named)
            e = Envelope(type=record_type, stream_id="s" * i, tenant_id="t", actor="a", payload=payload)
            bodies.append(C.encode(e))
    return bodies


def mutate(rng: random.Random, body: bytes, bodies: list[bytes]) -> bytes:
    b = bytearray(body)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
        pos = rng.randrange(HEADER_LEN, len(b)) if len(b) > HEADER_LEN else len(b) - 1
        kind = rng.randrange(7)
        if kind == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b[pos] = rng.choice(INTERESTING)
        elif kind == 2:
            b.insert(pos, rng.randrange(256))
        elif kind == 3:
            del b[pos]
        elif kind == 4:
            del b[pos:]
        elif kind == 5:
            b[pos:pos] = b"\xff" * rng.randrange(1, 11)
        else:
            other = rng.choice(bodies)
            start = rng.randrange(len(other))
            b[pos : pos + rng.randrange(1, 20)] = other[start : start + rng.randrange(1, 20)]
    return bytes(b)


def fastavro_read(data: bytes):
    try:
        return schemaless_reader(
            io.BytesIO(data[HEADER_LEN:]), WRITER, None, return_record_name=True, return_record_name_override=True
        )
    except Exception as e:
        return e


def fast_read(codec: Codec, data: bytes, json_fields: bool):
    try:
        return (codec._read_json if json_fields else codec._read)(data, HEADER_LEN)
    except (Unhandled, IndexError, ValueError, struct.error):
        return None


def check(data: bytes) -> list[str]:
    problems = []
    c, py = fast_read(C, data, False), fast_read(PY, data, False)
    if c is not None and (c[1] > len(data) or py != c or fastavro_read(data) != c[0]):
        problems.append("C read a body differently")
    if py is not None and py[1] <= len(data) and fastavro_read(data) != py[0]:
        problems.append("generated Python read a body differently from fastavro")
    c_json = fast_read(C, data, True)
    if c_json is not None and fast_read(PY, data, True) != c_json:
        problems.append("C read JSON fields differently")
    for codec in (C, PY):
        try:
            fields = codec.decode_json_fields(data)
        except Exception as e:
            problems.append(f"decode_json_fields raised {type(e).__name__}: {e}")
            fields = None
        try:
            e = codec.decode(data)
        except (DecodeError, NewerSchema):
            e = None
        except Exception as ex:
            problems.append(f"decode raised {type(ex).__name__}: {ex}")
            e = None
        if fields is not None:
            full = (
                None
                if e is None
                else tuple(json.loads(e.payload_json_text()) if n == "payload" else getattr(e, n) for n in JSON_FIELDS)
            )
            if (*fields[:-1], json.loads(fields[-1])) != full:
                problems.append("decode_json_fields differs from decode")
        try:
            frames.from_bytes(codec, 0, 1, data)
        except Exception as ex:
            problems.append(f"from_bytes raised {type(ex).__name__}: {ex}")
    return problems


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    cases = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    random.seed(seed)  # gen_data draws from the module's generator
    rng = random.Random(seed)
    bodies = valid_bodies()
    started, bad = time.time(), 0
    for i in range(cases):
        data = mutate(rng, rng.choice(bodies), bodies)
        for problem in check(data):
            bad += 1
            print(problem, data.hex(), flush=True)
        if bad > 20:
            break
        if i % 100_000 == 0:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(f"{i:,} cases, max RSS {rss} MB, {time.time() - started:.0f} s", flush=True)
    print(f"done: {i + 1:,} cases, {bad} problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
