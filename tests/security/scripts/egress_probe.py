"""Runs inside a sandbox: talks to the egress proxy (127.0.0.1:3128) byte by byte, as an agent
could, and prints what came back as one JSON line.

    python egress_probe.py send <base64 request bytes> [responses]   send raw bytes, read responses
    python egress_probe.py slow <base64 partial head>                trickle a head that never ends
    python egress_probe.py hold <n> <base64 request bytes>           hold n tunnels open, try one more
    python egress_probe.py stall <base64 request bytes> <seconds>    send, then read nothing for a while

It connects to this exec's own forwarder (the port in HTTP_PROXY), so the proxy attributes the
attempt to the command; 127.0.0.1:3128 (unattributed) when there is none. ``@AUTH@`` in the
request bytes becomes a ``Proxy-Authorization`` header from HTTP_PROXY: the proxy ignores it.
"""

import base64
import json
import os
import socket
import sys
import time
import urllib.parse

PROXY = ("127.0.0.1", urllib.parse.urlsplit(os.environ.get("HTTP_PROXY", "")).port or 3128)
WAIT_S = 60  # far beyond the proxy's header timeout: a hang here means the proxy never cut us off


def proxy_auth() -> bytes:
    url = urllib.parse.urlsplit(os.environ.get("HTTP_PROXY", ""))
    token = base64.b64encode(f"{url.username or ''}:{url.password or ''}".encode())
    return b"Proxy-Authorization: Basic " + token + b"\r\n"


def request_bytes(arg: str) -> bytes:
    return base64.b64decode(arg).replace(b"@AUTH@", proxy_auth())


def read_responses(sock: socket.socket, wanted: int) -> tuple[list[dict], bool]:
    """Up to ``wanted`` responses (Content-Length framed or ended by close); and whether EOF came."""
    buf, responses = b"", []
    sock.settimeout(WAIT_S)
    while len(responses) < wanted:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return responses, True
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        length = headers.get("Content-Length")
        if length is None:
            while data := sock.recv(65536):
                buf += data
            body, buf = buf, b""
        else:
            while len(buf) < int(length):
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
            body, buf = buf[: int(length)], buf[int(length) :]
        responses.append({"status": int(lines[0].split()[1]), "body": body.decode("latin-1")})
    return responses, False


def send(payload: bytes, wanted: int) -> dict:
    with socket.create_connection(PROXY, timeout=WAIT_S) as sock:
        sock.sendall(payload)
        try:
            responses, eof = read_responses(sock, wanted)
        except TimeoutError:
            return {"error": "timeout"}
    return {"responses": responses, "eof": eof}


def slow(partial: bytes) -> dict:
    """Send a head that never ends, one more byte a second (an idle timeout alone would not fire)."""
    with socket.create_connection(PROXY) as sock:
        sock.sendall(partial)
        sock.settimeout(1)
        for _ in range(WAIT_S):
            try:
                data = sock.recv(65536)
                return {"closed": True, "data": data.decode("latin-1")}
            except TimeoutError:
                pass
            try:
                sock.sendall(b"a")
            except OSError:
                return {"closed": True, "data": ""}
    return {"closed": False}


def hold(n: int, connect: bytes) -> dict:
    """Open n CONNECT tunnels and keep them, then ask for one more."""
    held, statuses = [], []
    for _ in range(n):
        sock = socket.create_connection(PROXY, timeout=WAIT_S)
        sock.sendall(connect)
        head = b""
        while b"\r\n\r\n" not in head and (data := sock.recv(1)):
            head += data
        statuses.append(int(head.split()[1]) if head else None)
        held.append(sock)
    extra = send(connect, 1)
    for sock in held:
        sock.close()
    return {"held": statuses, "extra": extra}


def stall(payload: bytes, seconds: float) -> dict:
    """Send a request and leave its answer unread (a client that stopped reading), then close."""
    with socket.create_connection(PROXY, timeout=WAIT_S) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(payload)
        time.sleep(seconds)
    return {"stalled": seconds}


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "send":
        result = send(request_bytes(argv[1]), int(argv[2]) if len(argv) > 2 else 1)
    elif mode == "slow":
        result = slow(request_bytes(argv[1]))
    elif mode == "stall":
        result = stall(request_bytes(argv[1]), float(argv[2]))
    elif mode == "hold":
        result = hold(int(argv[1]), request_bytes(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
