"""Host side of the supervisor protocol (see ``sandbox/supervisor.py``): one request per connection.

This is the only way the platform touches a running sandbox: the same code serves docker, bwrap
and kubernetes sandboxes, because each mounts the control directory holding the socket.
"""

import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from astraforge.errors import AstraForgeError
from astraforge.ids import new_id

HEADER = struct.Struct(">cI")


class SupervisorError(AstraForgeError):
    """The supervisor refused a request; ``code`` is one of its closed set of error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class SupervisorUnavailable(AstraForgeError, ConnectionError):
    """Nothing answers on the sandbox's control socket (not started yet, or gone)."""


@dataclass
class ExecResult:
    exit_code: int | None
    duration_ms: float
    timed_out: bool = False
    cancelled: bool = False
    pid: int | None = None
    chunks: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def stdout(self) -> bytes:
        return b"".join(d for s, d in self.chunks if s == "stdout")

    @property
    def stderr(self) -> bytes:
        return b"".join(d for s, d in self.chunks if s == "stderr")


class SupervisorClient:
    def __init__(self, socket_path: Path, connect_timeout: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.connect_timeout = connect_timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError as e:
            sock.close()
            raise SupervisorUnavailable(f"no supervisor at {self.socket_path}: {e}") from e
        sock.settimeout(None)
        return sock

    def _frames(self, request: dict, body: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        sock = self._connect()
        try:
            sock.sendall(json.dumps(request).encode() + b"\n" + (body or b""))
            reader = sock.makefile("rb")
            while header := reader.read(HEADER.size):
                if len(header) < HEADER.size:
                    raise SupervisorUnavailable("supervisor closed the connection mid-frame")
                kind, length = HEADER.unpack(header)
                payload = reader.read(length)
                if kind == b"E":
                    error = json.loads(payload)
                    raise SupervisorError(error["code"], error["message"])
                yield kind, payload
        finally:
            sock.close()

    def _result(self, request: dict, body: bytes | None = None) -> dict:
        for kind, payload in self._frames(request, body):
            if kind == b"r":
                return json.loads(payload)
        raise SupervisorUnavailable("supervisor sent no result")

    def ping(self) -> dict:
        return self._result({"id": new_id(), "op": "ping"})

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ping()
                return
            except SupervisorUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def exec(
        self,
        argv: list[str] | None = None,
        shell: str | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float = 600,
        request_id: str | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ExecResult:
        """Run a command; output reaches ``on_output`` (stream name, bytes) as it is produced."""
        request = {"id": request_id or new_id(), "op": "exec", "argv": argv or [], "shell": shell, "cwd": cwd,
                   "env": env or {}, "timeout_s": timeout_s}  # fmt: skip
        result = ExecResult(exit_code=None, duration_ms=0.0)
        for kind, payload in self._frames(request):
            if kind in (b"1", b"2"):
                stream = "stdout" if kind == b"1" else "stderr"
                if on_output:
                    on_output(stream, payload)
                else:
                    result.chunks.append((stream, payload))
            elif kind == b"s":
                result.pid = json.loads(payload)["pid"]
                if on_start:
                    on_start(result.pid)
            elif kind == b"x":
                done = json.loads(payload)
                result.exit_code, result.duration_ms = done["exit_code"], done["duration_ms"]
                result.timed_out, result.cancelled = done["timed_out"], done["cancelled"]
        return result

    def cancel(self, target_request_id: str) -> dict:
        return self._result({"id": new_id(), "op": "cancel", "target": target_request_id})

    def write(self, path: str, data: bytes, mode: int = 0o644) -> dict:
        return self._result({"id": new_id(), "op": "write", "path": path, "size": len(data), "mode": mode}, data)

    def read(self, path: str) -> bytes:
        chunks = []
        for kind, payload in self._frames({"id": new_id(), "op": "read", "path": path}):
            if kind == b"d":
                chunks.append(payload)
        return b"".join(chunks)
