"""Strict HTTP/1.1 message framing for the egress proxy (RFC 9112), both directions.

The proxy must know exactly where each message ends, or a second request can ride inside the
first one's bytes past its checks (request smuggling). So anything with two readings is refused:
a line not ended by CRLF (bare LF or bare CR), obs-fold (a header line starting with whitespace),
a header name that is not a token, control characters in a value, both Content-Length and
Transfer-Encoding, more than one Content-Length, a Content-Length that is not plain digits, and a
Transfer-Encoding other than exactly ``chunked``. Bodies are forwarded by their framing, chunk by
chunk, so the next message on the connection starts where the proxy thinks it does.

Not handled: request trailers are forwarded unchecked against the rules (they are headers of the
same, already checked request); ``Upgrade`` is stripped by the proxy, not negotiated here.
"""

import asyncio
import re
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
MAX_LINES = 200
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
CHUNK_SIZE = re.compile(r"^([0-9A-Fa-f]{1,16})(;[\t\x20-\x7e]*)?$")
CHUNK = 65536


class Malformed(ValueError):
    """A message whose framing the proxy refuses to guess at."""


@dataclass(frozen=True)
class Head:
    """A start line and its header fields, in order, as sent (values trimmed)."""

    start: str
    fields: tuple[tuple[str, str], ...]

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.fields if n.lower() == name]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` field, lower-cased (``Connection``)."""
        return {t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()}


@dataclass(frozen=True)
class Framing:
    """How a body ends: ``length`` bytes, ``chunked``, or at ``close`` (responses only)."""

    kind: str
    length: int = 0


async def read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise Malformed("a line over 64 KiB") from None
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise Malformed("a line not ended by CRLF (bare LF or CR)")
    return line


async def read_head(reader: asyncio.StreamReader, received: list[bytes]) -> Head | None:
    """The next head, or None when the peer closed before sending a byte of it. ``received``
    collects the lines as they come (the caller tells a slow head from an idle connection)."""
    size = 0
    while True:
        try:
            line = await read_line(reader)
        except asyncio.IncompleteReadError as e:
            if not received and not e.partial:
                return None
            raise Malformed("the connection closed inside a head") from None
        if line == b"\r\n" and not received:
            continue  # RFC 9112 §2.2: an empty line before a request line is ignored
        received.append(line)
        size += len(line)
        if size > MAX_HEAD or len(received) > MAX_LINES:
            raise Malformed("a head over 64 KiB or 200 lines")
        if line == b"\r\n":
            return parse_head(received)


def parse_head(lines: list[bytes]) -> Head:
    text = [line[:-2].decode("latin-1") for line in lines[:-1]]
    fields = []
    for line in text[1:]:
        if line[:1] in (" ", "\t"):
            raise Malformed("obs-fold (a header line starting with whitespace)")
        name, sep, value = line.partition(":")
        if not sep or not TOKEN.match(name):
            raise Malformed(f"header name {name!r} is not a token")
        value = value.strip(" \t")
        if not FIELD_VALUE.match(value):
            raise Malformed(f"a control character in header {name!r}")
        fields.append((name, value))
    return Head(text[0], tuple(fields))


def body_framing(head: Head, *, response: bool) -> Framing:
    """The body's framing by Content-Length / Transfer-Encoding, refusing ambiguity."""
    te, cl = head.get_all("transfer-encoding"), head.get_all("content-length")
    if te and cl:
        raise Malformed("both Content-Length and Transfer-Encoding")
    if te:
        if len(te) != 1 or te[0].lower() != "chunked":
            raise Malformed("a Transfer-Encoding other than a single 'chunked'")
        return Framing("chunked")
    if cl:
        if len(cl) != 1:
            raise Malformed("more than one Content-Length")
        if not (cl[0].isascii() and cl[0].isdigit()) or len(cl[0]) > 15:
            raise Malformed(f"invalid Content-Length {cl[0]!r}")
        return Framing("length", int(cl[0]))
    return Framing("close") if response else Framing("length", 0)


async def copy_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: Framing, prefix: bytes = b""
) -> None:
    """Forward exactly one body, after ``prefix`` (its head: one write where the body is short, so a
    relay with Nagle's algorithm on does not hold the body back); raises Malformed (or
    IncompleteReadError) when it is not one body."""
    out = _Coalesced(writer, prefix)
    if framing.kind == "length":
        await _copy_exactly(reader, out, framing.length)
    elif framing.kind == "close":
        while data := await reader.read(CHUNK):
            await out.write(data)
    else:
        while True:
            line = await read_line(reader)
            size = CHUNK_SIZE.match(line[:-2].decode("latin-1"))
            if not size:
                raise Malformed("a bad chunk-size line")
            await out.write(line)
            length = int(size[1], 16)
            if length == 0:
                break
            await _copy_exactly(reader, out, length)
            if await reader.readexactly(2) != b"\r\n":
                raise Malformed("a chunk not followed by CRLF")
            await out.write(b"\r\n")
        while (line := await read_line(reader)) != b"\r\n":  # trailers, then the final CRLF
            parse_head([b"x\r\n", line, b"\r\n"])  # the same field syntax as a head
            await out.write(line)
        await out.write(b"\r\n")
    await out.flush()


class _Coalesced:
    """Writes that wait for the first body bytes to go out with the head, then pass through."""

    def __init__(self, writer: asyncio.StreamWriter, prefix: bytes) -> None:
        self.writer, self.pending = writer, prefix

    async def write(self, data: bytes) -> None:
        if self.pending:
            data, self.pending = self.pending + data, b""
        self.writer.write(data)
        await self.writer.drain()

    async def flush(self) -> None:
        await self.write(b"")


async def _copy_exactly(reader: asyncio.StreamReader, out: _Coalesced, length: int) -> None:
    while length:
        data = await reader.read(min(CHUNK, length))
        if not data:
            raise asyncio.IncompleteReadError(b"", length)
        await out.write(data)
        length -= len(data)
