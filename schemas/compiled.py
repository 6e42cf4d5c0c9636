"""Avro writers and readers generated once from a parsed schema: the codec's fast path.

fastavro walks the schema dict for every record it writes or reads (here ~30 µs to write and
~35 µs to read one envelope, most of a producer's and the projector's CPU). Python code generated
once per record type does the same work in a few µs. It takes only the exact Python types the
schema asks for (``str``, ``int``, ``float``, ``bool``, ``bytes``, ``None``, ``list``, ``dict``);
any other value — and any body it cannot read cleanly — raises ``Unhandled``, and the codec asks
fastavro instead. fastavro stays the reference: the bytes written, the values read and every
error are fastavro's (``tests/unit/schemas/test_compiled.py`` compares them).

Not handled here (always fastavro): schema resolution (older writer schemas), tuple notation in
a nested union, unions other than ``[null, X]`` and the envelope's payload union, fixed and float.

The same work is done ~5x faster by ``astraforge._native`` (C, built at install) from a *program* — the
schema as nested tuples (``_Programs``) — when that extension is importable; the generated Python
code is the fallback where it is not (no C compiler) and the reference the tests hold it to.
"""

import base64
import functools
import logging
import math
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

try:
    from astraforge import _native
except ImportError:  # pragma: no cover - built by every install that has a C compiler
    _native = None
    logging.getLogger(__name__).warning("astraforge._native not built: the codec and ids run in Python")

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
_DOUBLE = struct.Struct("<d")


class Unhandled(Exception):
    """The fast path does not take this value or body: use fastavro."""


def zigzag(n: int) -> bytes:
    """A long as Avro writes it: zig-zag, then a little-endian base-128 varint."""
    if not LONG_MIN <= n <= LONG_MAX:
        raise Unhandled
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The long at ``pos`` (any length) and the position after it."""
    shift = n = 0
    while True:
        b = data[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise Unhandled  # bits past the 64th: fastavro drops them, a Python int would keep them
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Unhandled  # longer than any long: let fastavro say what it is
    return (n >> 1) ^ -(n & 1), pos


def _read_str(data: bytes, pos: int) -> tuple[str, int]:
    n, pos = read_long(data, pos)
    if n < 0:
        raise Unhandled
    end = pos + n
    return data[pos:end].decode(), end


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_long(data, pos)
    if n < 0:
        raise Unhandled
    end = pos + n
    return data[pos:end], end


def _read_double(data: bytes, pos: int) -> tuple[float, int]:
    return _DOUBLE.unpack_from(data, pos)[0], pos + 8


def json_bytes(value: bytes) -> str | dict[str, str]:
    """Bytes as the projection stores them in JSON: the text when it is UTF-8 without NUL (which
    jsonb rejects), else ``{"base64": ...}``."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}
    return text if "\x00" not in text else {"base64": base64.b64encode(value).decode()}


def _read_bool(data: bytes, pos: int) -> tuple[bool, int]:
    b = data[pos]
    if b > 1:
        raise Unhandled
    return b == 1, pos + 1


class _Source:
    """Python source being generated, with the constants it refers to."""

    def __init__(self, named: dict[str, dict]) -> None:
        self.named = named
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "Unhandled": Unhandled,
            "zigzag": zigzag,
            "read_long": read_long,
            "_read_str": _read_str,
            "_read_bytes": _read_bytes,
            "_read_double": _read_double,
            "_read_bool": _read_bool,
            "json_bytes": json_bytes,
            "isfinite": math.isfinite,
            "_DOUBLE": _DOUBLE,
            "INT_MIN": INT_MIN,
            "INT_MAX": INT_MAX,
            "LONG_MIN": LONG_MIN,
            "LONG_MAX": LONG_MAX,
        }
        self.functions: dict[str, str] = {}  # record name -> generated function name
        self.tail: list[str] = []  # module-level lines after every function
        self._tmp = 0

    def const(self, value: Any) -> str:
        name = f"_c{len(self.env)}"
        self.env[name] = value
        return name

    def tmp(self, prefix: str) -> str:
        self._tmp += 1
        return f"{prefix}{self._tmp}"

    def resolve(self, schema: Any) -> Any:
        """A named reference's definition; anything else as it is."""
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return self.named[schema]
        return schema

    def compile(self) -> dict[str, Any]:
        exec(compile("\n".join(self.lines + self.tail), "<astraforge.schemas.compiled>", "exec"), self.env)
        return self.env


def _indent(lines: list[str], levels: int = 1) -> list[str]:
    return ["    " * levels + line for line in lines]


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    return schema["type"]


# -- writers ------------------------------------------------------------------------------------
class _Writers(_Source):
    """``def w(d, out)`` per record: append the record ``d`` to the bytearray ``out``."""

    def record(self, schema: dict) -> str:
        name = schema["name"]
        if name in self.functions:
            return self.functions[name]
        fn = self.functions[name] = f"w{len(self.functions)}"
        body: list[str] = [
            "if d.__class__ is not dict or '-type' in d:",  # fastavro reads '-type' as a branch name
            "    raise Unhandled",
        ]
        for field in schema["fields"]:
            v = self.tmp("v")
            if "default" in field:
                body.append(f"{v} = d.get({field['name']!r}, {self.const(field['default'])})")
            else:  # missing: fastavro writes null or refuses, depending on where the record sits
                body.append(f"{v} = d[{field['name']!r}]")
            body += self.value(field["type"], v)
        self.lines += [f"def {fn}(d, out):", *_indent(body), ""]
        return fn

    def value(self, schema: Any, v: str) -> list[str]:
        """Lines appending the value in variable ``v`` to ``out`` (``raise Unhandled`` if unsure)."""
        schema = self.resolve(schema)
        kind = _kind(schema)
        if kind == "record":
            return [f"{self.record(schema)}({v}, out)"]
        if isinstance(schema, dict) and schema.get("logicalType") and kind != "long":
            return ["raise Unhandled"]
        if kind == "null":
            return [f"if {v} is not None:", "    raise Unhandled"]
        if kind == "boolean":
            return [
                f"if {v} is True:",
                "    out.append(1)",
                f"elif {v} is False:",
                "    out.append(0)",
                "else:",
                "    raise Unhandled",
            ]
        if kind in ("int", "long"):
            low, high = ("INT_MIN", "INT_MAX") if kind == "int" else ("LONG_MIN", "LONG_MAX")
            return [
                f"if {v}.__class__ is not int or not {low} <= {v} <= {high}:",
                "    raise Unhandled",
                f"if 0 <= {v} < 64:",
                f"    out.append({v} << 1)",
                "else:",
                f"    out += zigzag({v})",
            ]
        if kind == "double":
            return [f"if {v}.__class__ is not float:", "    raise Unhandled", f"out += _DOUBLE.pack({v})"]
        if kind in ("string", "bytes"):
            b, n = self.tmp("b"), self.tmp("n")
            check = "str" if kind == "string" else "bytes"
            encode = f"{v}.encode()" if kind == "string" else v
            return [
                f"if {v}.__class__ is not {check}:",
                "    raise Unhandled",
                f"{b} = {encode}",
                f"{n} = len({b})",
                f"if {n} < 64:",
                f"    out.append({n} << 1)",
                "else:",
                f"    out += zigzag({n})",
                f"out += {b}",
            ]
        if kind == "enum":
            index = self.const({s: zigzag(i) for i, s in enumerate(schema["symbols"])})
            i = self.tmp("i")
            return [
                f"{i} = {index}.get({v}) if {v}.__class__ is str else None",
                f"if {i} is None:",
                "    raise Unhandled",
                f"out += {i}",
            ]
        if kind == "array":
            item = self.tmp("x")
            return [
                f"if {v}.__class__ is not list:",
                "    raise Unhandled",
                f"if {v}:",
                f"    out += zigzag(len({v}))",
                f"    for {item} in {v}:",
                *_indent(self.value(schema["items"], item), 2),
                "out.append(0)",
            ]
        if kind == "map":
            key, val = self.tmp("k"), self.tmp("x")
            return [
                f"if {v}.__class__ is not dict:",
                "    raise Unhandled",
                f"if {v}:",
                f"    out += zigzag(len({v}))",
                f"    for {key}, {val} in {v}.items():",
                *_indent(self.value("string", key), 2),
                *_indent(self.value(schema["values"], val), 2),
                "out.append(0)",
            ]
        if kind == "union" and len(schema) == 2 and schema[0] == "null":
            return [
                f"if {v} is None:",
                "    out.append(0)",
                f"elif {v}.__class__ is tuple:",
                "    raise Unhandled",
                "else:",
                "    out.append(2)",
                *_indent(self.value(schema[1], v), 1),
            ]
        return ["raise Unhandled"]


# -- readers ------------------------------------------------------------------------------------
class _Readers(_Source):
    """``def r(data, pos) -> (record dict, pos)`` per record, as fastavro's ``schemaless_reader``
    returns it with ``return_record_name=True, return_record_name_override=True``."""

    def record(self, schema: dict) -> str:
        name = schema["name"]
        if name in self.functions:
            return self.functions[name]
        fn = self.functions[name] = f"r{len(self.functions)}"
        body: list[str] = []
        names = []
        for field in schema["fields"]:
            v = self.tmp("v")
            names.append(f"{field['name']!r}: {v}")
            body += self.value(field["type"], v)
        body.append(f"return {{{', '.join(names)}}}, pos")
        self.lines += [f"def {fn}(data, pos):", *_indent(body), ""]
        return fn

    def value(self, schema: Any, v: str) -> list[str]:
        """Lines reading one value at ``pos`` into variable ``v`` (and moving ``pos`` past it)."""
        schema = self.resolve(schema)
        kind = _kind(schema)
        if kind == "record":
            return [f"{v}, pos = {self.record(schema)}(data, pos)"]
        if kind == "null":
            return [f"{v} = None"]
        if kind == "boolean":
            return [f"{v}, pos = _read_bool(data, pos)"]
        if kind in ("int", "long"):
            lines = [
                f"{v} = data[pos]",
                "pos += 1",
                f"if {v} < 128:",
                f"    {v} = ({v} >> 1) ^ -({v} & 1)",
                "else:",
                f"    {v}, pos = read_long(data, pos - 1)",
            ]
            if kind == "int":
                lines += [f"    if not INT_MIN <= {v} <= INT_MAX:", "        raise Unhandled"]
            return lines
        if kind == "double":
            return [f"{v}, pos = _read_double(data, pos)"]
        if kind in ("string", "bytes"):
            n = self.tmp("n")
            decode = ".decode()" if kind == "string" else ""
            return [
                f"{n} = data[pos]",
                f"if {n} < 128 and not {n} & 1:",
                f"    {n} = pos + 1 + ({n} >> 1)",
                f"    {v} = data[pos + 1:{n}]{decode}",
                f"    pos = {n}",
                "else:",
                f"    {v}, pos = {'_read_str' if kind == 'string' else '_read_bytes'}(data, pos)",
            ]
        if kind == "enum":
            symbols = self.const(tuple(schema["symbols"]))
            i = self.tmp("i")
            return [*self.value("long", i), f"if {i} < 0:", "    raise Unhandled", f"{v} = {symbols}[{i}]"]
        if kind == "array":
            count, item = self.tmp("c"), self.tmp("x")
            return [
                f"{v} = []",
                "while True:",
                *_indent(self.value("long", count), 1),
                f"    if {count} == 0:",
                "        break",
                f"    if {count} < 0:",
                "        raise Unhandled",
                f"    for _ in range({count}):",
                *_indent(self.value(schema["items"], item), 2),
                f"        {v}.append({item})",
            ]
        if kind == "map":
            count, key, val = self.tmp("c"), self.tmp("k"), self.tmp("x")
            return [
                f"{v} = {{}}",
                "while True:",
                *_indent(self.value("long", count), 1),
                f"    if {count} == 0:",
                "        break",
                f"    if {count} < 0:",
                "        raise Unhandled",
                f"    for _ in range({count}):",
                *_indent(self.value("string", key), 2),
                *_indent(self.value(schema["values"], val), 2),
                f"        {v}[{key}] = {val}",
            ]
        if kind == "union" and len(schema) > 1 and all(_kind(self.resolve(b)) == "record" for b in schema):
            # several records: (name, record), as return_record_name gives it
            table = self.tmp("_table")
            entries = ", ".join(f"({self.resolve(b)['name']!r}, {self.record(self.resolve(b))})" for b in schema)
            self.tail.append(f"{table} = ({entries},)")
            entry = self.tmp("t")
            return [
                *self.value("long", entry),
                f"if {entry} < 0:",
                "    raise Unhandled",
                f"{entry} = {table}[{entry}]",
                f"{v}, pos = {entry}[1](data, pos)",
                f"{v} = ({entry}[0], {v})",
            ]
        if kind == "union" and len(schema) == 2 and schema[0] == "null" and _kind(self.resolve(schema[1])) != "null":
            branch = self.tmp("u")
            return [
                f"{branch} = data[pos]",
                "pos += 1",
                f"if {branch} == 0:",
                f"    {v} = None",
                f"elif {branch} == 2:",
                *_indent(self.value(schema[1], v), 1),
                "else:",
                "    raise Unhandled",
            ]
        return ["raise Unhandled"]


class _JsonReaders(_Readers):
    """Readers whose values are JSON-safe as ``codec.to_json`` makes them: bytes become text (or
    ``{"base64": ...}``); text holding NUL raises ``Unhandled`` (``to_json`` takes that path), and
    so does a NaN or infinite double (JSON has none: the full path decides what becomes of it)."""

    def value(self, schema: Any, v: str) -> list[str]:
        kind = _kind(self.resolve(schema))
        lines = super().value(schema, v)
        if kind == "bytes":
            return [*lines, f"{v} = json_bytes({v})"]
        if kind == "string":
            return [*lines, f"if '\\x00' in {v}:", "    raise Unhandled"]
        if kind == "double":
            return [*lines, f"if not isfinite({v}):", "    raise Unhandled"]
        return lines

    def fields(self, schema: dict, names: Sequence[str]) -> str:
        """``def f(data, pos) -> (tuple of the named fields, pos)``: the record without its dict."""
        body: list[str] = []
        found: dict[str, str] = {}
        for field in schema["fields"]:
            v = found[field["name"]] = self.tmp("v")
            body += self.value(field["type"], v)
        body.append(f"return ({''.join(found[n] + ', ' for n in names)}), pos")
        self.lines += ["def read_fields(data, pos):", *_indent(body), ""]
        return "read_fields"


def _named_types(schema: Any, named: dict[str, dict]) -> dict[str, dict]:
    """Every named type defined anywhere in ``schema`` (fastavro defines each once, then refers by name)."""
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed", "error"):
            named[schema["name"]] = schema
        for field in schema.get("fields", ()):
            _named_types(field["type"], named)
        for key in ("items", "values"):
            if key in schema:
                _named_types(schema[key], named)
    return named


# -- programs for _native ----------------------------------------------------------------------
OP_NULL, OP_BOOLEAN, OP_INT, OP_LONG, OP_DOUBLE, OP_STRING, OP_BYTES = range(7)
OP_ENUM, OP_ARRAY, OP_MAP, OP_OPTIONAL, OP_RECORD, OP_RECORDS, OP_UNHANDLED = range(7, 14)
FROM_ATTRIBUTE, FROM_VERSION, FROM_PAYLOAD = range(3)
_SIMPLE = {
    "null": OP_NULL, "boolean": OP_BOOLEAN, "int": OP_INT, "long": OP_LONG, "double": OP_DOUBLE,
    "string": OP_STRING, "bytes": OP_BYTES,
}  # fmt: skip


class _Programs:
    """A schema as the nested tuples ``_native`` runs (its header comment gives the shapes), with
    exactly the choices the generated code makes: what it takes for ``writing``, and otherwise what
    it reads. A record that refers to itself becomes ``OP_UNHANDLED`` there (tuples hold no cycles):
    such values go to fastavro."""

    def __init__(self, named: dict[str, dict], writing: bool) -> None:
        self.named = named
        self.writing = writing
        self.records: dict[str, tuple] = {}
        self._building: set[str] = set()

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return self.named[schema]
        return schema

    def record(self, schema: dict) -> tuple | None:
        name = schema["name"]
        if name in self.records:
            return self.records[name]
        if name in self._building:
            return None
        self._building.add(name)
        fields = tuple(
            (sys.intern(f["name"]), "default" in f, f.get("default"), self.op(f["type"])) for f in schema["fields"]
        )
        self._building.discard(name)
        record = self.records[name] = (name, fields)
        return record

    def op(self, schema: Any) -> tuple:
        schema = self.resolve(schema)
        kind = _kind(schema)
        if kind == "record":
            record = self.record(schema)
            return (OP_RECORD, record) if record is not None else (OP_UNHANDLED,)
        if self.writing and isinstance(schema, dict) and schema.get("logicalType") and kind != "long":
            return (OP_UNHANDLED,)
        if kind in _SIMPLE:
            return (_SIMPLE[kind],)
        if kind == "enum":
            symbols = tuple(schema["symbols"])
            return (OP_ENUM, {s: i for i, s in enumerate(symbols)}, symbols)
        if kind == "array":
            return (OP_ARRAY, self.op(schema["items"]))
        if kind == "map":
            return (OP_MAP, self.op(schema["values"]))
        if kind != "union":
            return (OP_UNHANDLED,)
        if self.writing:
            return (OP_OPTIONAL, self.op(schema[1])) if len(schema) == 2 and schema[0] == "null" else (OP_UNHANDLED,)
        if len(schema) > 1 and all(_kind(self.resolve(b)) == "record" for b in schema):
            branches = tuple((self.resolve(b)["name"], self.record(self.resolve(b))) for b in schema)
            return (OP_RECORDS, branches) if all(r is not None for _, r in branches) else (OP_UNHANDLED,)
        if len(schema) == 2 and schema[0] == "null" and _kind(self.resolve(schema[1])) != "null":
            return (OP_OPTIONAL, self.op(schema[1]))
        return (OP_UNHANDLED,)


def _configured() -> Any:
    _native.configure(Unhandled, json_bytes)
    return _native


def _accelerated(accelerated: bool | None) -> Any:
    """The C extension when it is wanted and built; ``None`` for the generated Python code."""
    if accelerated is False or (accelerated is None and _native is None):
        return None
    if _native is None:
        raise RuntimeError("astraforge._native is not built (reinstall with a C compiler)")
    return _configured()


def _payload_records(resolve: Callable[[Any], Any], field: dict) -> list[dict]:
    """The envelope's payload union, a record per branch in branch order (else ``ValueError``)."""
    union = resolve(field["type"])
    if _kind(union) != "union" or not all(_kind(resolve(b)) == "record" for b in union):
        raise ValueError("the payload must be a union of records")
    return [resolve(b) for b in union]


def _read_program(schema: dict) -> tuple | None:
    return _Programs(_named_types(schema, {}), writing=False).record(schema)


def _envelope_program(schema: dict) -> tuple:
    programs = _Programs(_named_types(schema, {}), writing=True)
    fields, table = [], {}
    for field in schema["fields"]:
        name = field["name"]
        if name == "payload":
            for i, record in enumerate(_payload_records(programs.resolve, field)):
                program = programs.record(record)
                if program is not None:  # a branch left out raises Unhandled: fastavro writes it
                    table[program[0]] = (zigzag(i), program)
            fields.append((name, FROM_PAYLOAD, None))
        else:
            fields.append(
                (name, FROM_VERSION if name == "schema_version" else FROM_ATTRIBUTE, programs.op(field["type"]))
            )
    return tuple(fields), table


def envelope_writer(schema: dict, accelerated: bool | None = None) -> Callable[[Any, int, str, bytearray], None]:
    """``write(envelope, schema_version, payload_record_name, out)``: the envelope record, its
    fields taken from the ``Envelope``'s attributes and the payload written as the named branch.
    ``accelerated``: the C extension (``True``), the generated Python (``False``), the C one when built (``None``)."""
    fast = _accelerated(accelerated)
    if fast is not None:
        return functools.partial(fast.write_envelope, _envelope_program(schema))
    src = _Writers(_named_types(schema, {}))
    body = []
    for field in schema["fields"]:
        name = field["name"]
        if name == "payload":
            table = src.const({})
            for i, record in enumerate(_payload_records(src.resolve, field)):
                src.tail.append(f"{table}[{record['name']!r}] = ({zigzag(i)!r}, {src.record(record)})")
            body += [
                f"branch = {table}.get(record)",
                "if branch is None:",
                "    raise Unhandled",
                "out += branch[0]",
                "branch[1](e.payload, out)",
            ]
            continue
        v = src.tmp("v")
        body.append(f"{v} = version" if name == "schema_version" else f"{v} = e.{name}")
        body += src.value(field["type"], v)
    src.lines += ["def write_envelope(e, version, record, out):", *_indent(body), ""]
    return src.compile()["write_envelope"]


def envelope_reader(schema: dict, accelerated: bool | None = None) -> Callable[[bytes, int], tuple[dict, int]]:
    """``read(data, pos) -> (datum, pos)``: the envelope as fastavro reads it with
    ``return_record_name=True, return_record_name_override=True`` (the payload as ``(name, dict)``)."""
    fast = _accelerated(accelerated)
    if fast is not None:
        record = _read_program(schema)
        if record is not None:
            return functools.partial(fast.read_record, record, False)
    src = _Readers(_named_types(schema, {}))
    fn = src.record(schema)
    return src.compile()[fn]


def envelope_json_reader(
    schema: dict, names: Sequence[str], accelerated: bool | None = None
) -> Callable[[bytes, int], tuple[tuple, int]]:
    """``read(data, pos) -> (values, pos)``: the envelope's fields ``names`` as a tuple (no dict,
    no ``Envelope``), each value JSON-safe (see ``_JsonReaders``), the payload as ``(name, dict)``.
    For consumers that turn a record straight into text or rows (the projector's COPY)."""
    fast = _accelerated(accelerated)
    if fast is not None:
        record = _read_program(schema)
        if record is not None:
            order = tuple(next(i for i, f in enumerate(schema["fields"]) if f["name"] == n) for n in names)
            return functools.partial(fast.read_fields, record, order)
    src = _JsonReaders(_named_types(schema, {}))
    fn = src.fields(schema, names)
    return src.compile()[fn]
