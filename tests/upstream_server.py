"""A small HTTP/1.1 upstream for the egress tests; runs inside the test's network namespace
(``ip netns exec``, see tests/netns.py).

It answers every request ``200 hello from upstream`` on a kept-alive connection and appends one
JSON line per request to the log file: the raw head exactly as received (so a test sees what the
proxy forwarded, bare LFs included), the body, and the address the connection arrived on. It is
deliberately lenient (a head may end in a bare LF): it must show what got through, not refuse it.
A CONNECT tunnel into it is answered the same way.

A hostile upstream on request: a GET of ``/flood-interim`` is answered by ``103 Early Hints`` heads,
one after another (each waits for the socket to take the previous one), up to ``FLOOD_BYTES``;
how many bytes the proxy took is kept in ``<log file>.flood``.

    python tests/upstream_server.py <port> <log file>
"""

import asyncio
import json
import sys
from pathlib import Path

BODY = b"hello from upstream"
FLOOD_BYTES = 256 * 1024 * 1024
EARLY_HINT = b"HTTP/1.1 103 Early Hints\r\nLink: <" + b"x" * 16000 + b">\r\n\r\n"


async def flood_interim(writer: asyncio.StreamWriter, log_path: str) -> None:
    sent = 0
    while sent < FLOOD_BYTES:
        writer.write(EARLY_HINT)
        sent += len(EARLY_HINT)
        if sent // len(EARLY_HINT) % 64 == 0 or sent >= FLOOD_BYTES:  # about every MiB
            Path(log_path + ".flood").write_text(str(sent))
        await writer.drain()


async def read_body(reader: asyncio.StreamReader, head: str) -> bytes:
    fields = {}
    for line in head.replace("\r\n", "\n").split("\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readline()).strip() or b"0", 16):
            body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()  # the CRLF after the last chunk (no trailers in our tests)
        return body
    return await reader.readexactly(int(fields.get("content-length", "0") or 0))


def serve(log_path: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = writer.get_extra_info("sockname")[0]
        try:
            while True:
                head = b""
                while not head.endswith((b"\r\n\r\n", b"\n\n")):
                    line = await reader.readline()
                    if not line:
                        return
                    head += line
                text = head.decode("latin-1")
                body = await read_body(reader, text)
                with open(log_path, "a") as log:
                    log.write(json.dumps({"local": local, "head": text, "body": body.decode("latin-1")}) + "\n")
                if text.startswith("GET /flood-interim "):
                    await flood_interim(writer, log_path)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    return handle


async def main(port: int, log_path: str) -> None:
    server = await asyncio.start_server(serve(log_path), "0.0.0.0", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
