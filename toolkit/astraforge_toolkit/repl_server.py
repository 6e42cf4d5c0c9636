"""A Python interpreter that keeps its state across calls, inside a sandbox (python3, stdlib only).

This file is copied into the sandbox and run there; it never runs on the client's side.

    python3 repl_server.py DIR CODE    run CODE in DIR's interpreter, print what it printed

The first call starts the interpreter (``serve``, in a session of its own so it outlives the
exec that started it; the platform records it as ``exec.detached``) listening on ``DIR/sock``;
every call after sends its code there. Code runs as in a notebook cell: the value of a last bare
expression is printed. A failure prints the traceback and exits 1. One request at a time: the
interpreter's globals are shared state, as in any REPL.
"""

import ast
import contextlib
import fcntl
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import traceback

START_WAIT_S = 10.0


def send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack(">I", len(data)) + data)


def receive(sock: socket.socket) -> bytes:
    head = _exactly(sock, 4)
    return _exactly(sock, struct.unpack(">I", head)[0])


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the interpreter closed the connection")
        data += chunk
    return data


def run_cell(code: str, namespace: dict) -> tuple[str, bool]:
    """Run ``code`` in ``namespace``: (what it printed, and the traceback on failure; whether it failed)."""
    out = io.StringIO()
    failed = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            tree = ast.parse(code, "<cell>", "exec")
            last = tree.body[-1] if tree.body else None
            if isinstance(last, ast.Expr):
                tree.body.pop()
                exec(compile(tree, "<cell>", "exec"), namespace)
                value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
                if value is not None:
                    print(repr(value))
            else:
                exec(compile(tree, "<cell>", "exec"), namespace)
        except BaseException:
            failed = True
            traceback.print_exc()
    return out.getvalue(), failed


def serve(directory: str) -> None:
    namespace: dict = {"__name__": "__main__"}
    path = os.path.join(directory, "sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".new")
    server.listen(8)
    os.rename(path + ".new", path)  # appears only once it accepts
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                code = receive(conn).decode()
                output, failed = run_cell(code, namespace)
                send(conn, json.dumps({"output": output, "failed": failed}).encode())
            except (ConnectionError, OSError):
                continue


def connect(directory: str) -> socket.socket:
    """A connection to DIR's interpreter, started first if none answers (one starter at a time)."""
    path = os.path.join(directory, "sock")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _connected(path)
        except OSError:
            pass
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", directory],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=os.getcwd(),
        )
        deadline = time.monotonic() + START_WAIT_S
        while True:
            try:
                return _connected(path)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


def _connected(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def main() -> int:
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
        return 0
    directory, code = sys.argv[1], sys.argv[2]
    with connect(directory) as sock:
        send(sock, code.encode())
        answer = json.loads(receive(sock))
    sys.stdout.write(answer["output"])
    return 1 if answer["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
