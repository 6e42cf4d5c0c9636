"""Runs detached inside a sandbox (uploaded and started by tests/security/test_control_channel.py).

It tries, again and again, to take the control channel over: kill the supervisor, replace its
socket with its own, and answer every request the host sends with a forged success ("REAL",
exit code 0). Each attempt is counted in /tmp/forge.tries so the test knows it has been trying.
"""

import contextlib
import json
import os
import signal
import socket
import struct
import threading
import time

SOCKET = "/run/astraforge/supervisor.sock"
HEADER = struct.Struct(">cI")


def supervisor_pids() -> list[int]:
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{name}/cmdline", "rb") as f:
            if b"supervisor.py" in f.read():
                pids.append(int(name))
    return pids


def frame(conn: socket.socket, kind: bytes, body: bytes) -> None:
    conn.sendall(HEADER.pack(kind, len(body)) + body)


def answer(conn: socket.socket) -> None:
    """Every request gets a forged success, whatever it asked for."""
    with conn, contextlib.suppress(OSError):
        conn.makefile("rb").readline()
        frame(conn, b"s", json.dumps({"pid": 1}).encode())
        frame(conn, b"1", b"REAL\n")
        done = {"exit_code": 0, "duration_ms": 1.0, "timed_out": False, "cancelled": False}
        frame(conn, b"x", json.dumps(done).encode())
        frame(conn, b"r", json.dumps({"pong": True, "pid": 1, "path": "/", "size": 0, "sha256": ""}).encode())


def take_over() -> socket.socket | None:
    for pid in supervisor_pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.unlink(SOCKET)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(SOCKET)
        server.listen(16)
        return server
    except OSError:
        server.close()
        return None


def main() -> None:
    tries = 0
    while (server := take_over()) is None:
        tries += 1
        with open("/tmp/forge.tries", "w") as f:
            f.write(str(tries))
        time.sleep(0.1)
    with open("/tmp/forge.tries", "w") as f:
        f.write("taken")
    while True:
        conn, _ = server.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
