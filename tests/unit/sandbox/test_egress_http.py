"""Strict HTTP/1.1 framing: what the proxy refuses to guess at, and bodies forwarded exactly."""

import asyncio

import pytest

from astraforge.sandbox.egress import DenialLimiter
from astraforge.sandbox.egress_http import Malformed, body_framing, copy_body, read_head


class Sink:
    """Stands in for a StreamWriter: collects what is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass


def reader_of(data: bytes) -> asyncio.StreamReader:
    """Call inside a running loop."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def head_of(data: bytes):
    async def read():
        return await read_head(reader_of(data), [])

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"GET / HTTP/1.1\r\nA: 1\nB: 2\r\n\r\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nA: 1\rB: 2\r\n\r\n", "bare LF or CR"),
        (b"GET / HTTP/1.1\r\nA: 1\r\n B: 2\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\nA B: 1\r\n\r\n", "not a token"),
        (b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n", "control character"),
        (b"GET / HTTP/1.1\r\nA: 1\r\n", "closed inside"),
    ],
)
def test_malformed_heads(head: bytes, why: str) -> None:
    with pytest.raises(Malformed, match=why):
        head_of(head)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n", "both"),
        (b"Content-Length: 1\r\nContent-Length: 1\r\n", "more than one"),
        (b"Content-Length: +1\r\n", "invalid"),
        (b"Content-Length: 1,1\r\n", "invalid"),
        (b"Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding"),
    ],
)
def test_ambiguous_framing(fields: bytes, why: str) -> None:
    with pytest.raises(Malformed, match=why):
        body_framing(head_of(b"POST / HTTP/1.1\r\n" + fields + b"\r\n"), response=False)


def test_bodies_are_forwarded_by_their_framing_and_no_further() -> None:
    framing = body_framing(head_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), response=False)

    async def run():
        reader, sink = reader_of(b"5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nNEXT"), Sink()
        await copy_body(reader, sink, framing)
        return bytes(sink.data), await reader.read()

    assert asyncio.run(run()) == (b"5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n", b"NEXT")


def test_a_chunk_without_its_crlf_is_refused() -> None:
    framing = body_framing(head_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), response=False)

    async def run():
        await copy_body(reader_of(b"5\r\nhelloXX0\r\n\r\n"), Sink(), framing)

    with pytest.raises(Malformed):
        asyncio.run(run())


def test_denials_past_the_limit_are_counted_not_recorded() -> None:
    now = [0.0]
    limiter = DenialLimiter(limit=3, window_s=10, clock=lambda: now[0])
    assert [limiter.admit() for _ in range(5)] == [True, True, True, False, False]
    assert limiter.drain() == 2 and limiter.drain() == 0
    now[0] = 10.0
    assert limiter.admit(), "a new window records again"
