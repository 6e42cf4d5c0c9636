"""The in-sandbox supervisor: the sandbox's main process, serving exec and file requests on a unix
socket in the control directory the host mounts at /run/astraforge.

Runs inside the sandbox with python3's standard library only (it is bind-mounted read-only into
any image that has python3). One connection carries one request:

    request   one JSON line: {"id": "...", "op": "exec" | "write" | "read" | "cancel" | "ping", ...}
              (``write`` is followed by exactly ``size`` raw bytes)
    response  frames: 1 byte kind + 4 bytes big-endian length + body
              kinds: s started {pid} · 1 stdout bytes · 2 stderr bytes · d file bytes
                     x exit {exit_code, duration_ms, timed_out, cancelled} · r result {...}
                     E error {code, message}; codes are a closed set (see ERROR_CODES)

Request ids make retries safe: an exec id that is running or already ran is refused with
``duplicate``, never started twice. ``cancel`` and timeouts kill the command's whole process group.
It also runs the egress forwarder: 127.0.0.1:3128 inside the sandbox relays to the host's egress
proxy socket in the control directory (see ``sandbox/egress.py``).
The supervisor isolates nothing itself; the sandbox around it does.
"""

import contextlib
import hashlib
import json
import os
import selectors
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time

CHUNK = 64 * 1024
ERROR_CODES = ("bad_request", "duplicate", "not_found", "forbidden_path", "io_error", "spawn_failed")
WRITABLE_ROOTS = ("/workspace", "/tmp", os.environ.get("HOME", "/home/sandbox"))
HEADER = struct.Struct(">cI")
EGRESS_PORT = 3128

_lock = threading.Lock()
_running: dict[str, subprocess.Popen] = {}
_seen: set[str] = set()
_cancelled: set[str] = set()


class RequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES
        super().__init__(message)
        self.code = code


def frame(sock: socket.socket, kind: bytes, body: bytes) -> None:
    sock.sendall(HEADER.pack(kind, len(body)) + body)


def frame_json(sock: socket.socket, kind: bytes, value: dict) -> None:
    frame(sock, kind, json.dumps(value).encode())


def resolve(path: str, for_write: bool) -> str:
    """Absolute, symlink-free path; writes must land under a writable root."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise RequestError("bad_request", "path must be a non-empty string")
    full = os.path.realpath(os.path.join("/workspace", path))
    if for_write and not any(full == root or full.startswith(root.rstrip("/") + "/") for root in WRITABLE_ROOTS):
        raise RequestError("forbidden_path", f"{path} resolves outside the writable roots {WRITABLE_ROOTS}")
    return full


def do_exec(sock: socket.socket, req: dict) -> None:
    rid = req["id"]
    argv = req.get("argv") or []
    shell = req.get("shell")
    if not argv and not shell:
        raise RequestError("bad_request", "exec needs argv or shell")
    if argv and not all(isinstance(a, str) for a in argv):
        raise RequestError("bad_request", "argv must be a list of strings")
    with _lock:
        if rid in _seen:
            raise RequestError("duplicate", f"request {rid} was already started")
        _seen.add(rid)
    env = {**os.environ, **{str(k): str(v) for k, v in (req.get("env") or {}).items()}}
    cwd = req.get("cwd") or "/workspace"
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv or ["/bin/sh", "-c", shell], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        raise RequestError("spawn_failed", f"{type(e).__name__}: {e}") from None
    with _lock:
        _running[rid] = proc
    frame_json(sock, b"s", {"pid": proc.pid})
    timeout = float(req.get("timeout_s") or 600)
    deadline = started + timeout
    timed_out = False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, b"1")
    sel.register(proc.stderr, selectors.EVENT_READ, b"2")
    open_pipes = 2
    try:
        while open_pipes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                kill_group(proc)
                break
            for key, _ in sel.select(timeout=min(remaining, 0.5)):
                data = os.read(key.fd, CHUNK)
                if not data:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                else:
                    frame(sock, key.data, data)
        exit_code = proc.wait()
    except (BrokenPipeError, ConnectionResetError):
        kill_group(proc)  # the host went away: do not leave the command running unobserved
        proc.wait()
        return
    finally:
        sel.close()
        with _lock:
            _running.pop(rid, None)
    kill_group(proc)  # reap anything the command left behind in its group
    with _lock:
        cancelled = rid in _cancelled
    frame_json(sock, b"x", {
        "exit_code": exit_code, "duration_ms": round((time.monotonic() - started) * 1000, 3),
        "timed_out": timed_out, "cancelled": cancelled,
    })  # fmt: skip


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def do_cancel(sock: socket.socket, req: dict) -> None:
    target = req.get("target")
    with _lock:
        proc = _running.get(target)
        if proc:
            _cancelled.add(target)
    if proc is None:
        raise RequestError("not_found", f"no running command {target}")
    kill_group(proc)
    frame_json(sock, b"r", {"cancelled": target})


def do_write(sock: socket.socket, req: dict, rfile) -> None:
    size = req.get("size")
    if not isinstance(size, int) or size < 0:
        raise RequestError("bad_request", "write needs a non-negative integer size")
    path = resolve(req.get("path"), for_write=True)
    digest = hashlib.sha256()
    tmp = f"{path}.af-{req['id']}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, int(req.get("mode") or 0o644))
        with os.fdopen(fd, "wb") as out:
            remaining = size
            while remaining:
                data = rfile.read(min(CHUNK, remaining))
                if not data:
                    raise RequestError("bad_request", f"connection closed {remaining} bytes short")
                out.write(data)
                digest.update(data)
                remaining -= len(data)
        os.replace(tmp, path)  # atomic: readers never see half a file
    except OSError as e:
        raise RequestError("io_error", f"{type(e).__name__}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    frame_json(sock, b"r", {"path": path, "size": size, "sha256": digest.hexdigest()})


def do_read(sock: socket.socket, req: dict) -> None:
    path = resolve(req.get("path"), for_write=False)
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as src:
            while data := src.read(CHUNK):
                frame(sock, b"d", data)
                digest.update(data)
                size += len(data)
    except FileNotFoundError:
        raise RequestError("not_found", f"{req.get('path')} does not exist") from None
    except OSError as e:
        raise RequestError("io_error", f"{type(e).__name__}: {e.strerror or e}") from None
    frame_json(sock, b"r", {"path": path, "size": size, "sha256": digest.hexdigest()})


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            line = self.rfile.readline(1 << 20)
            try:
                req = json.loads(line)
                assert isinstance(req, dict) and isinstance(req.get("id"), str) and isinstance(req.get("op"), str)
            except (ValueError, AssertionError):
                raise RequestError("bad_request", "expected one JSON object line with string id and op") from None
            op = req["op"]
            if op == "ping":
                frame_json(self.connection, b"r", {"pong": True, "pid": os.getpid()})
            elif op == "exec":
                do_exec(self.connection, req)
            elif op == "cancel":
                do_cancel(self.connection, req)
            elif op == "write":
                do_write(self.connection, req, self.rfile)
            elif op == "read":
                do_read(self.connection, req)
            else:
                raise RequestError("bad_request", f"unknown op {op!r}")
        except RequestError as e:
            with contextlib.suppress(OSError):
                frame_json(self.connection, b"E", {"code": e.code, "message": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def forward_egress(egress_socket: str, port: int) -> None:
    """Expose the host's egress proxy (a unix socket in the control dir) as 127.0.0.1:<port>."""
    listener = socket.create_server(("127.0.0.1", port))

    def relay(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(egress_socket)
            except OSError:  # no egress configured for this sandbox: nothing to reach
                client.close()
                upstream.close()
                continue
            threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
            threading.Thread(target=relay, args=(upstream, client), daemon=True).start()

    threading.Thread(target=accept, name="egress-forwarder", daemon=True).start()


def main(path: str) -> None:
    forward_egress(os.path.join(os.path.dirname(path), "egress.sock"), EGRESS_PORT)
    if os.path.exists(path):
        os.unlink(path)
    server = Server(path, Handler)
    os.chmod(path, 0o600)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/run/astraforge/supervisor.sock")
