"""Host side of the supervisor protocol (see ``sandbox/supervisor.py``): one request per connection.

This is the only way the platform touches a running sandbox: the same code serves docker, bwrap
and kubernetes sandboxes, because each mounts the control directory holding the socket.

The control directory is writable by the sandbox's supervisor, so the host never follows a path
in it: the directory and the socket are opened with O_NOFOLLOW (a symlink is refused, not
followed), the connection goes to the very inode that was checked (``/proc/self/fd/N``), and the
listening peer's credentials (SO_PEERCRED) must be the sandbox's supervisor: its host uid, in
the sandbox's own pid namespace (``PeerIdentity``, recorded by the provider when it started the
sandbox). Another sandbox's supervisor, or anything the agent could start, fails that check.
"""

import contextlib
import io
import json
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from astraforge.errors import AstraForgeError
from astraforge.ids import new_id

HEADER = struct.Struct(">cI")
CONTROL_TIMEOUT_S = 5.0  # a control call (ping, cancel) waits this long for its answer: a hung supervisor
FINGERPRINT_TIMEOUT_S = 60.0  # hashing files the sandbox may have grown large
# the supervisor reads one request line of at most 1 MiB: leased paths past it (up to 4,096 characters
# each, as many as a tenant leases) made the request unreadable, and the guard's whole check with it
FINGERPRINT_BATCH_CHARS = 256 * 1024
# and each hashes up to max_bytes (64 MiB) per file: a command can grow every leased file to that in a
# moment (sparse), and a thousand of them in one request held it past FINGERPRINT_TIMEOUT_S (~75 s
# here at 0.86 GB/s), the whole check given up; 32 of them take ~2.5 s
FINGERPRINT_BATCH_PATHS = 32
# (stopped, or starved by the agent) must not hold the processor's control lane
BODY_CHUNK = 1024 * 1024  # a file body crosses the socket in pieces this size, never whole in memory


class SupervisorError(AstraForgeError):
    """The supervisor refused a request; ``code`` is one of its closed set of error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class SupervisorUnavailable(AstraForgeError, ConnectionError):
    """Nothing answers on the sandbox's control socket (not started yet, or gone)."""


class SupervisorTimeout(SupervisorUnavailable, TimeoutError):
    """The supervisor took the request and did not answer within the call's timeout."""


class SupervisorImpostor(SupervisorUnavailable):
    """Something other than the sandbox's own supervisor sits at its control socket: never talked to."""


@dataclass(frozen=True)
class PeerIdentity:
    """Who must be listening on a sandbox's control socket, as the host sees it.

    ``uid`` is the supervisor's host uid (docker: 0, the container's root; bwrap: the unprivileged
    host uid its user namespace maps to 0) and ``pid_ns`` the sandbox's pid namespace
    (``pid:[inode]``). No process of another sandbox is in that namespace, and no process of this
    sandbox but the supervisor runs as that uid (the agent's commands have another uid).
    """

    uid: int
    pid_ns: str

    @classmethod
    def of(cls, pid: int, uid: int) -> "PeerIdentity":
        """The identity of the sandbox whose process ``pid`` (a host pid) is."""
        return cls(uid, os.readlink(f"/proc/{pid}/ns/pid"))


@dataclass(frozen=True)
class DetachedProcess:
    """A process a command left running when it ended (another session, a double fork), as seen by
    the supervisor. It keeps running until the sandbox stops."""

    pid: int
    argv: list[str]


@dataclass
class SupervisorResult:
    """What the supervisor reported for one command (the processor records it; the API's
    ``ExecResult`` is read back from those records)."""

    exit_code: int | None
    duration_ms: float
    timed_out: bool = False
    cancelled: bool = False
    pid: int | None = None
    resumed_at: int = 0  # attach: the byte offset the output served starts at
    lost: int = 0  # attach: bytes between the offset asked for and ``resumed_at`` no longer kept
    chunks: list[tuple[str, bytes]] = field(default_factory=list)
    detached: list[DetachedProcess] = field(default_factory=list)

    @property
    def stdout(self) -> bytes:
        return b"".join(d for s, d in self.chunks if s == "stdout")

    @property
    def stderr(self) -> bytes:
        return b"".join(d for s, d in self.chunks if s == "stderr")


class SupervisorClient:
    SOCKET = "supervisor.sock"

    def __init__(self, control_dir: Path, peer: PeerIdentity, connect_timeout: float = 5.0) -> None:
        self.control_dir = Path(control_dir)
        self.peer = peer
        self.connect_timeout = connect_timeout

    def _open_socket_inode(self) -> int:
        """An O_PATH fd on the socket itself; a symlink anywhere at the last two steps is refused."""
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            dir_fd = os.open(self.control_dir, flags | os.O_DIRECTORY)
        except OSError as e:
            raise SupervisorUnavailable(f"no control directory at {self.control_dir}: {e.strerror}") from e
        try:
            fd = os.open(self.SOCKET, flags, dir_fd=dir_fd)
        except OSError as e:
            raise SupervisorUnavailable(f"no supervisor at {self.control_dir}: {e.strerror}") from e
        finally:
            os.close(dir_fd)
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            os.close(fd)
            raise SupervisorImpostor(f"{self.control_dir / self.SOCKET} is not a socket (a symlink?): refused")
        return fd

    def _check_peer(self, sock: socket.socket) -> None:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        try:
            pid_ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            pid_ns = None
        if uid != self.peer.uid or pid_ns != self.peer.pid_ns:
            raise SupervisorImpostor(
                f"the socket in {self.control_dir} is served by uid {uid} in {pid_ns}, not by the sandbox's "
                f"supervisor (uid {self.peer.uid} in {self.peer.pid_ns}): refused"
            )

    def _connect(self) -> socket.socket:
        fd = self._open_socket_inode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(f"/proc/self/fd/{fd}")  # the inode checked above, not whatever the path names now
            self._check_peer(sock)
        except OSError as e:
            sock.close()
            if isinstance(e, SupervisorImpostor):
                raise
            raise SupervisorUnavailable(f"no supervisor at {self.control_dir}: {e}") from e
        finally:
            os.close(fd)
        sock.settimeout(None)
        return sock

    def _frames(
        self,
        request: dict,
        body: BinaryIO | None = None,
        size: int = 0,
        concurrently: bool = False,
        timeout: float | None = None,
        sock: socket.socket | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Send the request (and ``size`` bytes of ``body``), then yield the answer's frames. A
        command's stdin is sent ``concurrently`` with reading its output: a command that writes
        before it reads would otherwise wait on us while we wait on it. ``timeout``: how long any one
        send or read may wait (None: as long as the command runs). ``sock``: a connection opened
        (and its peer checked) before, which this call takes over and closes."""
        sock = sock or self._connect()
        sock.settimeout(timeout)
        reader = sock.makefile("rb")
        sender = None
        try:
            try:
                sock.sendall(json.dumps(request).encode() + b"\n")
                if concurrently and body is not None and size:  # no thread for a command without stdin
                    sender = threading.Thread(target=_send_body, args=(sock, body, size, True), daemon=True)
                    sender.start()
                else:
                    _send_body(sock, body, size)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the supervisor answered before taking the whole body (a refusal): read its answer
            while header := _read(reader, HEADER.size):
                if len(header) < HEADER.size:
                    raise SupervisorUnavailable("supervisor closed the connection mid-frame")
                kind, length = HEADER.unpack(header)
                payload = _read(reader, length)
                if kind == b"E":
                    error = json.loads(payload)
                    raise SupervisorError(error["code"], error["message"])
                yield kind, payload
        except TimeoutError as e:
            raise SupervisorTimeout(f"the supervisor did not answer {request['op']} within {timeout}s") from e
        finally:
            if sender:  # wakes a send still blocked on a command that stopped reading its stdin
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sender.join()
            reader.close()  # before the socket: a socket closed under an open reader stays open until GC
            sock.close()

    def _result(self, request: dict, body: BinaryIO | None = None, size: int = 0, timeout: float | None = None) -> dict:
        for kind, payload in self._frames(request, body, size, timeout=timeout):
            if kind == b"r":
                return json.loads(payload)
        raise SupervisorUnavailable("supervisor sent no result")

    def ping(self, timeout: float = CONTROL_TIMEOUT_S) -> dict:
        return self._result({"id": new_id(), "op": "ping"}, timeout=timeout)

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
        egress: bool = False,
        stdin: BinaryIO | None = None,
        stdin_size: int = 0,
        report_detached: bool = True,
    ) -> SupervisorResult:
        """Run a command; output reaches ``on_output`` (stream name, bytes) as it is produced.

        ``egress``: give the command its own forwarder to the egress proxy (HTTP(S)_PROXY), whose
        connections the proxy attributes to this request id. ``stdin``: ``stdin_size`` bytes streamed
        to the command's standard input (otherwise it reads /dev/null). ``report_detached``: whether
        processes left behind (by this or another command) are reported to this one
        (``SupervisorResult.detached``); a caller that does not record them passes False, or they are never
        recorded."""
        request = _exec_request(argv, shell, cwd, env, timeout_s, request_id, egress, report_detached)
        request["stdin_size"] = stdin_size if stdin else 0
        frames = self._frames(request, stdin, request["stdin_size"], concurrently=True)
        return _command_result(frames, on_output, on_start)

    def prepare_exec(
        self,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str] | None,
        timeout_s: float,
        request_id: str,
        egress: bool = False,
    ) -> "PreparedExec":
        """Open (and check) the connection an exec will go over, sending nothing: the command runs
        only once ``PreparedExec.run`` sends its request (as ``exec`` would, without stdin)."""
        request = _exec_request(argv, None, cwd, env, timeout_s, request_id, egress, True)
        return PreparedExec(self, request, self._connect())

    def attach(
        self,
        target_request_id: str,
        offset: int,
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> SupervisorResult:
        """Take over a command another connection started (its host went away), reading its output
        from byte ``offset`` (both streams counted together, as produced) to its exit, as ``exec`` does.
        ``SupervisorResult.resumed_at`` is where the output served starts: past ``offset`` when the
        supervisor no longer kept those bytes (``lost``). ``SupervisorError``: ``not_found`` (the
        supervisor does not know the command: it never ran there, was forgotten, or the supervisor
        restarted; a protocol 1 supervisor answers ``bad_request``), ``taken_over`` (another host
        attached meanwhile)."""
        request = {"id": new_id(), "op": "attach", "target": target_request_id, "offset": offset}
        return _command_result(self._frames(request), on_output, None)

    def cancel(self, target_request_id: str, timeout: float = CONTROL_TIMEOUT_S) -> dict:
        return self._result({"id": new_id(), "op": "cancel", "target": target_request_id}, timeout=timeout)

    def write(self, path: str, data: bytes, mode: int = 0o644) -> dict:
        return self.write_file(path, io.BytesIO(data), len(data), mode)

    def write_file(self, path: str, source: BinaryIO, size: int, mode: int = 0o644, exact: bool = False) -> dict:
        """Write ``size`` bytes read from ``source`` (streamed, atomically replaced in the sandbox).
        ``exact``: replace the absolute path's last component itself, even a symlink, instead of
        following it (the lease guard putting a holder's file back)."""
        request = {"id": new_id(), "op": "write", "path": path, "size": size, "mode": mode}
        if exact:
            request["exact"] = True
        return self._result(request, source, size)

    def fingerprint(self, paths: list[str], max_bytes: int | None = None) -> dict[str, dict]:
        """What is at each absolute path itself (no symlink followed): {path: {kind, sha256, size}},
        kind file | symlink | missing | redirected | other. A file over ``max_bytes`` is not hashed
        (its ``sha256`` is a ``large:`` signature of inode, size and ctime)."""
        files: dict[str, dict] = {}
        for batch in _batches(paths, FINGERPRINT_BATCH_CHARS, FINGERPRINT_BATCH_PATHS):
            request = {"id": new_id(), "op": "fingerprint", "paths": batch}
            if max_bytes is not None:
                request["max_bytes"] = max_bytes
            files.update(self._result(request, timeout=FINGERPRINT_TIMEOUT_S)["files"])
        return files

    def unlink(self, path: str) -> None:
        """Remove the file, symlink or empty directory at an exact absolute path (a missing one is no error)."""
        self._result({"id": new_id(), "op": "unlink", "path": path}, timeout=CONTROL_TIMEOUT_S)

    def read(self, path: str, limit: int | None = None) -> bytes:
        sink = io.BytesIO()
        self.read_into(path, sink, limit)
        return sink.getvalue()

    def read_into(self, path: str, sink: BinaryIO, limit: int | None = None, exact: bool = False) -> dict:
        """Stream a sandbox file into ``sink``; past ``limit`` bytes the read stops with ``too_large``
        (the file is the sandbox's: it can be as big as its disk, or still growing). ``exact``: the
        file at the absolute path itself, no symlink followed (the lease guard keeping a holder's bytes)."""
        size = 0
        request = {"id": new_id(), "op": "read", "path": path}
        if exact:
            request["exact"] = True
        for kind, payload in self._frames(request):
            if kind == b"d":
                size += len(payload)
                if limit is not None and size > limit:
                    raise SupervisorError("too_large", f"{path} is larger than {limit} bytes")
                sink.write(payload)
            elif kind == b"r":
                return json.loads(payload)
        raise SupervisorUnavailable("supervisor sent no result")


class PreparedExec:
    """An exec whose connection is open and its peer checked, its request not sent yet (see
    ``SupervisorClient.prepare_exec``): ``run`` sends it and reads the command to its end, ``close``
    lets it go unsent (the supervisor reads an empty request and drops the connection)."""

    def __init__(self, client: SupervisorClient, request: dict, sock: socket.socket) -> None:
        self.client = client
        self.request = request
        self._sock: socket.socket | None = sock

    def run(
        self, on_output: Callable[[str, bytes], None] | None = None, on_start: Callable[[int], None] | None = None
    ) -> SupervisorResult:
        sock, self._sock = self._sock, None
        if sock is None:
            raise SupervisorUnavailable("the prepared exec was closed or run already")
        return _command_result(self.client._frames(self.request, sock=sock), on_output, on_start)

    def close(self) -> None:
        """Let the connection go if it was not run (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _exec_request(
    argv: list[str] | None,
    shell: str | None,
    cwd: str | None,
    env: dict[str, str] | None,
    timeout_s: float,
    request_id: str | None,
    egress: bool,
    report_detached: bool,
) -> dict:
    return {
        "id": request_id or new_id(),
        "op": "exec",
        "argv": argv or [],
        "shell": shell,
        "cwd": cwd,
        "env": env or {},
        "timeout_s": timeout_s,
        "egress": egress,
        "report_detached": report_detached,
        "stdin_size": 0,
    }


def _batches(paths: list[str], max_chars: int, max_paths: int) -> Iterator[list[str]]:
    """``paths`` in order, in lists of at most ``max_paths`` whose JSON stays within about ``max_chars``
    (at least one path each)."""
    batch: list[str] = []
    size = 0
    for path in paths:
        length = len(json.dumps(path)) + 2
        if batch and (size + length > max_chars or len(batch) >= max_paths):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += length
    if batch:
        yield batch


def _command_result(
    frames: Iterator[tuple[bytes, bytes]],
    on_output: Callable[[str, bytes], None] | None,
    on_start: Callable[[int], None] | None,
) -> SupervisorResult:
    """Read a command's frames (of ``exec`` or ``attach``) to its exit. The connection is closed when
    this returns or raises (also when ``on_output`` raises: that detaches the host, the command goes on)."""
    with contextlib.closing(frames):
        return _read_command(frames, on_output, on_start)


def _read_command(frames, on_output, on_start) -> SupervisorResult:
    result, ended = SupervisorResult(exit_code=None, duration_ms=0.0), False
    for kind, payload in frames:
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
        elif kind == b"a":
            attached = json.loads(payload)
            result.pid, result.resumed_at, result.lost = attached["pid"], attached["offset"], attached["lost"]
        elif kind == b"D":
            result.detached += [DetachedProcess(p["pid"], p["argv"]) for p in json.loads(payload)["processes"]]
        elif kind == b"x":
            done = json.loads(payload)
            result.exit_code, result.duration_ms = done["exit_code"], done["duration_ms"]
            result.timed_out, result.cancelled = done["timed_out"], done["cancelled"]
            ended = True
            break  # the last frame; what follows may be a reset (unread stdin), not an end of file
    if not ended:  # the supervisor died (or was killed) mid-command: say so, never a silent result
        raise SupervisorUnavailable("the supervisor went away before the command ended")
    return result


def _read(reader: BinaryIO, size: int) -> bytes:
    """The next ``size`` bytes; a reset connection is a supervisor that went away, said as such."""
    try:
        return reader.read(size)
    except ConnectionResetError as e:
        raise SupervisorUnavailable(f"the supervisor reset the connection: {e}") from e


def _send_body(sock: socket.socket, body: BinaryIO | None, size: int, quiet: bool = False) -> None:
    """Exactly ``size`` bytes of ``body`` (a source that ends early is the caller's bug). ``quiet``:
    a command that ended before reading all its stdin closes the connection; not an error."""
    remaining = size if body is not None else 0
    try:
        while remaining:
            chunk = body.read(min(BODY_CHUNK, remaining))
            if not chunk:
                raise ValueError(f"the body ended {remaining} bytes short of its announced size")
            sock.sendall(chunk)
            remaining -= len(chunk)
    except OSError:
        if not quiet:
            raise
