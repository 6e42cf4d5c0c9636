"""The in-sandbox supervisor: the sandbox's main process, serving exec and file requests on a unix
socket in the control directory the host mounts at /run/astraforge.

Runs inside the sandbox with python3's standard library only (it is bind-mounted read-only into
any image that has python3). One connection carries one request:

    request   one JSON line: {"id": "...", "op": "exec" | "attach" | "write" | "read" | "cancel" | "ping"
              | "fingerprint" | "unlink", ...} (``write`` is followed by exactly ``size`` raw bytes;
              ``fingerprint``, ``unlink`` and ``write`` with ``exact`` serve the lease guard: they act
              on the path itself, never following a symlink in its last component)
    response  frames: 1 byte kind + 4 bytes big-endian length + body
              kinds: s started {pid} · a attached {pid, offset, lost} · 1 stdout bytes · 2 stderr bytes
                     d file bytes · D detached {processes: [{pid, argv}]} (sent before x)
                     x exit {exit_code, duration_ms, timed_out, cancelled} · r result {...}
                     E error {code, message}; codes are a closed set (see ERROR_CODES)

Request ids make retries safe: an exec id that is running or already ran is refused with
``duplicate``, never started twice (in bounded memory: ``RequestIds`` says how). ``cancel`` and
timeouts kill the command's whole process group.

Protocol 2 (``ping`` answers ``protocol``; version 1 answered none): a command outlives the connection
that started it. Its output is kept by byte offset (``CommandLog``: both streams in one sequence, the
last LOG_BYTES); when the host goes away (its processor gave the sandbox's partition to another
instance, or died) the command goes on, and ``attach`` {target, offset} serves the output from
``offset`` (the bytes the host has recorded), then the exit, to whichever host asks next, also after
the command ended (the last KEPT_ENDED ended commands are kept). ``a`` says where the output served
starts and how many bytes were dropped before it (``lost``: more than LOG_BYTES came while no host was
attached). One host reads a command at a time: the one attached before gets ``E taken_over``.
A version 1 supervisor killed the command when its host went away and answers ``attach`` with
``bad_request``. Only the host reaches this socket (below), so only the host can attach.

Trust boundary: the agent's commands are hostile, and the supervisor is not one of them.
- It starts as the sandbox's uid 0 (docker: the container's root; bwrap: root of a user namespace
  that maps only two unprivileged host uids) and keeps only CAP_SETUID, CAP_SETGID and CAP_KILL;
  its bounding and ambient sets are emptied before anything else runs (``lock_down``).
- Every command runs as the agent's uid (``--agent-uid``) with no supplementary groups and no
  capability in any set (``as_agent_argv``): it cannot signal or ptrace the supervisor (another
  uid) nor enter the control directory (the supervisor's, mode 0700), so it can neither reach nor
  replace this socket or the egress socket beside it.
- File reads and writes run with the agent's filesystem identity (setfsuid, for the handling
  thread only): a symlink the agent planted leads only where the agent could go itself. /proc is
  refused: its ``self`` would be the supervisor.
- When a command ends, processes it left running (another session, a double fork) are reported
  (frame D) and keep running until the sandbox stops; the provider's pid namespace or container
  takes them down. With commands running concurrently, such a process is reported with the first
  command to end after it left its session (the supervisor sees the process, not its history)
  that asked for reports: the platform's own commands (``report_detached`` false) do not, since
  nothing records their reports.
- Egress: 127.0.0.1:3128 relays to the host's egress proxy socket unattributed; an exec asked with
  ``egress`` gets a forwarder port of its own (its HTTP(S)_PROXY) whose connections are announced
  to the proxy as that exec's (``AF-EXEC <id>``). Any process of the sandbox can connect to any of
  these ports: attribution says which command's forwarder was used, never what a request claims.
The supervisor isolates nothing else itself; the sandbox around it does.
"""

import collections
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import selectors
import signal
import socket
import socketserver
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

CHUNK = 64 * 1024
FRAME_INTERVAL_S = 0.02  # a command's output is framed at most this often (or per CHUNK): see _Output
ERROR_CODES = ("bad_request", "duplicate", "not_found", "forbidden_path", "io_error", "spawn_failed", "taken_over")
PROTOCOL = 2  # 2: commands outlive their connection (``attach``); ping says which one a supervisor speaks
LOG_BYTES = 1024 * 1024  # of a command's output kept for a host that re-attaches (see CommandLog)
KEPT_ENDED = 16  # ended commands whose output and exit stay for a host that re-attaches
KEPT_IDS = 4096  # exec ids remembered one by one (see RequestIds)
WRITABLE_ROOTS = ("/workspace", "/tmp", os.environ.get("HOME", "/home/sandbox"))
HEADER = struct.Struct(">cI")
EGRESS_PORT = 3128
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP = 5, 6, 7, 8
SWITCH_CAPS = (1 << CAP_SETGID) | (1 << CAP_SETUID)  # inheritable: what setpriv gets when started as root
KEPT_CAPS = SWITCH_CAPS | (1 << CAP_KILL)
SETPRIV, ENV = "/usr/bin/setpriv", "/usr/bin/env"
ROOT_ENV = {"PATH": "/usr/bin:/bin"}  # all setpriv sees: it runs as root, the command's environment is the agent's
THREAD_STACK_BYTES = 512 * 1024  # the supervisor's threads recurse little (see main)
M_ARENA_MAX = -8  # mallopt(3)
MAX_ARGV_BYTES = 512  # of a detached process's command line, as reported (x pids: bounded records)

_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()
_spawn_lock = threading.Lock()  # held while starting a command and while reaping/scanning processes
_running: dict[str, subprocess.Popen] = {}
_children: dict[int, subprocess.Popen] = {}  # commands started and not yet reaped, by pid
_logs: dict[str, "CommandLog"] = {}  # running commands' output, by request id
_ended: collections.OrderedDict[str, "CommandLog"] = collections.OrderedDict()  # see _keep
_cancelled: set[str] = set()
AGENT_UID = -1
EGRESS_SOCKET = "/run/astraforge/egress.sock"
PROC_DEV = os.stat("/proc").st_dev


class RequestIds:
    """The exec ids this supervisor has taken (started, or closed as never run by an ``attach`` that
    found nothing), so that one comes to run at most once, in memory bounded for the sandbox's life.

    The threat is a command redelivered inside the platform (a crash before its offset committed, a
    new owner starting a command it believes never started): the duplicate arrives soon after the
    original, with few others between. So the last ``KEPT_IDS`` ids are kept one by one, and below
    them a floor: the platform mints ids as UUIDv7 (``astraforge.ids.new_id``: time first, so the
    canonical text sorts by time), and a UUIDv7 id that sorts at or below the newest-minted id ever
    forgotten is refused as well: it was minted before ids already let go, so it may be one of them.
    Not covered: an id that is not a lower-case UUIDv7 (a caller's own) is remembered only while it
    is among the last ``KEPT_IDS``; and a fresh UUIDv7 held back while ``KEPT_IDS`` ids minted after
    it started is refused (the safe side). Not the threat: a host replaying ids on purpose (only the
    host reaches this socket)."""

    def __init__(self, kept: int = KEPT_IDS) -> None:
        self.kept = kept
        self.recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.floor = ""  # the newest-minted UUIDv7 forgotten so far ("" sorts below every id)

    def take(self, request_id: str) -> bool:
        """Note ``request_id`` as taken; False if it was (or, below the floor, may have been) before."""
        if request_id in self.recent or (_is_uuid7(request_id) and request_id <= self.floor):
            return False
        self.recent[request_id] = None
        while len(self.recent) > self.kept:
            old, _ = self.recent.popitem(last=False)
            if _is_uuid7(old) and old > self.floor:
                self.floor = old
        return True


def _is_uuid7(value: str) -> bool:
    """A lower-case canonical UUIDv7 (version 7, RFC variant), whose text sorts by its time."""
    if len(value) != 36 or value[14] != "7" or value[19] not in "89ab":
        return False
    parts = value.split("-")
    return [len(x) for x in parts] == [8, 4, 4, 4, 12] and all(c in "0123456789abcdef" for x in parts for c in x)


_taken = RequestIds()


class ReportedProcesses:
    """The detached processes already reported, so that each is reported once (with the first
    command to end after it left its session), in memory bounded for the sandbox's life.

    A process is known by (pid, start time): a pid the kernel reuses starts at another time. Each
    look forgets the processes no longer alive: a pair that died never comes back, so forgetting it
    loses nothing, and what is kept is at most the sandbox's live processes (its ``pids`` limit,
    at most 4096), however many came and went before. One still alive is never forgotten, so it is
    never reported twice."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, str]] = set()

    def new(self, live: list[dict], sessions: set[int]) -> list[dict]:
        """The processes of ``live`` (every live process of the agent, as ``_process`` reads them) that
        belong to none of ``sessions`` (the running commands') and were not reported before; noted
        as reported. The caller holds ``_lock``."""
        self.seen.intersection_update((p["pid"], p["start"]) for p in live)
        found = [p for p in live if p["session"] not in sessions and (p["pid"], p["start"]) not in self.seen]
        self.seen.update((p["pid"], p["start"]) for p in found)
        return found


_reported = ReportedProcesses()


class RequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES
        super().__init__(message)
        self.code = code


def frame(sock: socket.socket, kind: bytes, body: bytes) -> None:
    sock.sendall(HEADER.pack(kind, len(body)) + body)


def frame_json(sock: socket.socket, kind: bytes, value: dict) -> None:
    frame(sock, kind, json.dumps(value).encode())


# -- privileges --------------------------------------------------------------------------------
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _ok(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SystemExit(f"supervisor: {what} failed: {os.strerror(err)} (see the provider's capabilities)")


def _set_caps(effective: int, permitted: int, inheritable: int) -> None:
    data = (_CapData * 2)()
    data[0].effective, data[0].permitted, data[0].inheritable = effective, permitted, inheritable
    _ok(_libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")


def lock_down(agent_uid: int) -> None:
    """Once, before any thread: hand the writable roots to the agent, then keep CAP_SETUID,
    CAP_SETGID and CAP_KILL (effective, permitted) and CAP_SETUID/SETGID as inheritable, with an
    empty bounding set: setpriv, started as root, gets exactly SETUID/SETGID and drops them with
    the uid; nothing else the sandbox ever runs can hold a capability."""
    if os.getuid() != 0 or agent_uid <= 0:
        raise SystemExit("supervisor: must start as the sandbox's uid 0 with a non-root --agent-uid")
    for tool in (SETPRIV, ENV):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"supervisor: {tool} is missing from the image (util-linux, coreutils)")
    for root in WRITABLE_ROOTS:
        st = os.lstat(root)
        if (st.st_uid, st.st_gid) != (agent_uid, agent_uid):
            os.chown(root, agent_uid, agent_uid, follow_symlinks=False)  # bwrap's tmpfs (CAP_CHOWN, dropped below)
    os.setgroups([])
    _set_caps(KEPT_CAPS | (1 << CAP_SETPCAP), KEPT_CAPS | (1 << CAP_SETPCAP), SWITCH_CAPS)  # inheritable ⊆ bounding
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):  # needs CAP_SETPCAP, dropped next
        _ok(_libc.prctl(24, ctypes.c_ulong(cap), 0, 0, 0), "PR_CAPBSET_DROP")
    _ok(_libc.prctl(47, 4, 0, 0, 0), "PR_CAP_AMBIENT_CLEAR_ALL")
    _set_caps(KEPT_CAPS, KEPT_CAPS, SWITCH_CAPS)
    with open("/proc/self/status") as f:
        status = {k: int(v, 16) for k, _, v in (line.partition(":\t") for line in f) if k.startswith("Cap")}
    if (status["CapEff"], status["CapInh"], status["CapBnd"], status["CapAmb"]) != (KEPT_CAPS, SWITCH_CAPS, 0, 0):
        raise SystemExit(f"supervisor: capabilities are not as required: {status}")


@contextlib.contextmanager
def as_agent():
    """File accesses of this thread (only) use the agent's uid and gid."""
    _libc.setfsgid(AGENT_UID)
    _libc.setfsuid(AGENT_UID)
    try:
        if _libc.setfsuid(-1) != AGENT_UID or _libc.setfsgid(-1) != AGENT_UID:  # -1: read back, change nothing
            raise RequestError("io_error", "could not take the agent's file identity")
        yield
    finally:
        _libc.setfsuid(os.getuid())
        _libc.setfsgid(os.getgid())


# -- paths -------------------------------------------------------------------------------------
def _under(path: str, roots) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def resolve(path: str, for_write: bool) -> str:
    """Absolute, symlink-free path (resolved with the agent's identity); writes must land under a
    writable root; nothing under /proc."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise RequestError("bad_request", "path must be a non-empty string")
    full = os.path.realpath(os.path.join("/workspace", path))
    if _under(full, ("/proc",)):
        raise RequestError("forbidden_path", f"{path} resolves into /proc")
    if for_write and not _under(full, WRITABLE_ROOTS):
        raise RequestError("forbidden_path", f"{path} resolves outside the writable roots {WRITABLE_ROOTS}")
    return full


def _io_error(e: OSError) -> RequestError:
    return RequestError("io_error", f"{type(e).__name__}: {e.strerror or e}")


# -- processes ---------------------------------------------------------------------------------
def _process(pid: int) -> dict | None:
    """uid, state, process group, session, start time and argv of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/status", "rb") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith(b"Uid:"))
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read(MAX_ARGV_BYTES)
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    argv = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
    return {
        "pid": pid,
        "uid": uid,
        "state": fields[0].decode(),
        "pgrp": int(fields[2]),
        "session": int(fields[3]),
        "start": fields[19].decode(),
        "argv": argv,
    }


def _processes() -> list[dict]:
    return [p for name in os.listdir("/proc") if name.isdigit() and (p := _process(int(name)))]


def left_behind(pgid: int) -> list[dict]:
    """Live processes of the agent that belong to no running command: what the command that
    owned process group ``pgid`` (now killed) left behind, not reported before."""
    me = os.getuid()
    candidates = [p for p in _processes() if p["uid"] != me and p["state"] not in "ZX" and p["pgrp"] != pgid]
    with _spawn_lock, _lock:  # a command is registered under _spawn_lock before it can fork: its session is known
        found = _reported.new(candidates, set(_children) | {proc.pid for proc in _running.values()})
    return [{"pid": p["pid"], "argv": p["argv"]} for p in found]


def reap_orphans() -> None:
    """As pid 1 (docker), orphans are re-parented to us: reap those that are not our commands."""
    me = os.getpid()
    with _spawn_lock:
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in _children:
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == b"Z" and int(fields[1]) == me:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(name), os.WNOHANG)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# -- egress ------------------------------------------------------------------------------------
class Forwarder:
    """Relays connections on 127.0.0.1:<port> to the host's egress proxy socket, each preceded by
    ``AF-EXEC <tag>\\n`` (the command it is attributed to, ``-`` for none). Only the supervisor can
    reach that socket, so the proxy believes this line and nothing the connection itself says.
    ``close`` (its command ended) also cuts the connections still open: a process the command left
    behind is not recorded as the command once it has ended."""

    def __init__(self, tag: str, port: int = 0) -> None:
        self.tag = tag
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()  # upstream sockets of live connections
        self._closed = False
        threading.Thread(target=self._accept, name=f"forwarder-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(EGRESS_SOCKET)
                upstream.sendall(f"AF-EXEC {self.tag}\n".encode())
            except OSError:  # no egress configured for this sandbox: nothing to reach
                client.close()
                upstream.close()
                continue
            with self._lock:
                if self._closed:  # accepted as the command ended
                    client.close()
                    upstream.close()
                    return
                self._open.add(upstream)
            threading.Thread(target=self._connection, args=(client, upstream), daemon=True).start()

    def _connection(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions of one connection (one more thread); both sockets closed at its end."""
        back = threading.Thread(target=_relay, args=(upstream, client), daemon=True)
        back.start()
        _relay(client, upstream)
        back.join()
        with self._lock:
            self._open.discard(upstream)
        client.close()
        upstream.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            live = list(self._open)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.listener.close()
        for upstream in live:  # both relays of each end, and close it
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)


def _relay(src: socket.socket, dst: socket.socket) -> None:
    """One direction until either side ends; then both are shut down (the other direction ends)."""
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


# -- operations --------------------------------------------------------------------------------
def _check_cwd(cwd) -> str:
    """The agent must be able to enter ``cwd`` itself (the command is started there as it)."""
    if not isinstance(cwd, str) or "\0" in cwd:
        raise RequestError("bad_request", "cwd must be a path")
    cwd = os.path.join("/workspace", cwd)
    with as_agent():
        try:
            if not stat.S_ISDIR(os.stat(os.path.join(cwd, ".")).st_mode):
                raise NotADirectoryError(20, "Not a directory")
        except OSError as e:
            raise RequestError("bad_request", f"cwd {cwd}: {e.strerror or e}") from None
    return cwd


def as_agent_argv(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` run as the agent: setpriv (as root, in ROOT_ENV: a loader variable of the agent's
    must never reach a root process) takes the agent's uid, gid and no groups and drops its
    inheritable capabilities; then ``env -i`` (already the agent) sets the command's environment.
    Two execs without a fork: a fork of the supervisor costs more here (vfork is not possible for
    subprocess with user=)."""
    if "=" in argv[0]:
        raise RequestError("bad_request", "argv[0] must not contain '='")
    if any(not k or "=" in k for k in env):
        raise RequestError("bad_request", "environment names must be non-empty and without '='")
    return [
        SETPRIV,
        f"--reuid={AGENT_UID}",
        f"--regid={AGENT_UID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        ENV,
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        *argv,
    ]


def _spawn(argv: list[str], cwd: str, env: dict[str, str], stdin: bool = False) -> subprocess.Popen:
    command = as_agent_argv(argv, env)
    with _spawn_lock:
        try:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=ROOT_ENV,
                stdout=subprocess.PIPE,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except ValueError as e:  # a NUL byte
            raise RequestError("bad_request", str(e)) from None
        _children[proc.pid] = proc
    return proc


def _reaped(proc: subprocess.Popen) -> int | None:
    """The exit code once the command has exited (then reaped), else None."""
    code = proc.poll()
    if code is not None:
        with _spawn_lock:
            _children.pop(proc.pid, None)
    return code


def _feed_stdin(rfile, pipe, size: int) -> None:
    """Copy the request's ``size`` body bytes to the command's stdin, then close it. A command that
    stops reading does not stop the copy: the rest is read and dropped, so the host's send (which
    finishes before it reads any answer) never waits on a full socket."""
    remaining = size
    try:
        while remaining:
            data = rfile.read(min(CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            if pipe is not None:
                try:
                    pipe.write(data)
                except (BrokenPipeError, ValueError):
                    pipe = None
    except (OSError, ValueError):  # the host went away (or the request ended): the command sees its stdin end
        return
    finally:
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


class Attachment:
    """One host connection reading a command's output: where it has read up to (``cursor``)."""

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor


class CommandLog:
    """A command's output by byte offset (both streams in one sequence, as produced) and, once it
    ended, its exit: what a host reads, from any offset still kept, whether or not a host was
    attached when it was produced.

    Bounds: the last ``LOG_BYTES`` (+ one read) are kept. While a host is attached the command
    waits for it once that host is ``LOG_BYTES`` behind (back-pressure, as when the output went
    straight to the socket: nothing is lost). With no host attached (it went away: its processor
    moved the command to another instance, or died) the command never waits: the oldest bytes are
    dropped, and the host that attaches later is told how many it missed (``lost``). One host is
    attached at a time: a new attachment takes the command over and the previous one is told so."""

    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.cond = threading.Condition()
        self.chunks: collections.deque[tuple[int, bytes, bytes]] = collections.deque()  # (offset, kind, data)
        self.base = 0  # offset of the first byte kept
        self.end = 0  # offset after the last byte produced
        self.pid: int | None = None
        self.detached: list[dict] = []  # processes it left behind (reported before its exit)
        self.exit: dict | None = None  # the ``x`` frame's body, once it ended
        self.attached: Attachment | None = None

    def append(self, kind: bytes, data: bytes, deadline_passed: Callable[[], None]) -> None:
        """Keep ``data``; wait while an attached host is LOG_BYTES behind (``deadline_passed`` is
        called every half second meanwhile: the command's timeout still applies)."""
        with self.cond:
            while self.attached is not None and self.end - self.attached.cursor >= LOG_BYTES:
                if not self.cond.wait(0.5):
                    deadline_passed()
            self.chunks.append((self.end, kind, data))
            self.end += len(data)
            floor = self.end - LOG_BYTES
            if self.attached is not None:
                floor = min(floor, self.attached.cursor)
            while self.chunks and self.chunks[0][0] + len(self.chunks[0][2]) <= floor:
                offset, _, old = self.chunks.popleft()
                self.base = offset + len(old)
            self.cond.notify_all()

    def finish(self, detached: list[dict], exit_info: dict) -> None:
        with self.cond:
            self.detached, self.exit = detached, exit_info
            self.cond.notify_all()

    def attach(self, offset: int) -> tuple[Attachment, int, int]:
        """Take the command over from ``offset``: (attachment, first offset served, bytes lost)."""
        with self.cond:
            if not 0 <= offset <= self.end:
                raise RequestError("bad_request", f"offset {offset} is not within the output (0..{self.end})")
            start = max(offset, self.base)
            self.attached = Attachment(start)
            self.cond.notify_all()  # the previous attachment learns it was taken over
            return self.attached, start, start - offset

    def detach(self, attachment: Attachment) -> None:
        with self.cond:
            if self.attached is attachment:
                self.attached = None
                self.cond.notify_all()

    def serve(self, sock: socket.socket, attachment: Attachment) -> None:
        """Frame the output from the attachment's cursor, then D and x once the command ended; an
        ``E taken_over`` if another host attached meanwhile. Raises OSError if this host went away
        (the caller detaches it; the command goes on)."""
        output = _Output(sock)
        while True:
            with self.cond:
                while (
                    self.attached is attachment
                    and attachment.cursor >= self.end
                    and self.exit is None
                    and output.wait() != 0
                ):
                    self.cond.wait(output.wait())
                if self.attached is not attachment:
                    taken = True
                else:
                    taken, parts = False, self._since(attachment.cursor)
                    attachment.cursor = self.end
                    ended = self.exit is not None
                    self.cond.notify_all()  # a command waiting for this host's reading goes on
            if taken:
                output.flush()
                raise RequestError("taken_over", f"another connection attached to {self.id}")
            for kind, data in parts:
                output.add(kind, data)
            if output.wait() == 0:
                output.flush()
            if ended and not parts:
                output.flush()
                if self.detached:
                    frame_json(sock, b"D", {"processes": self.detached})
                frame_json(sock, b"x", self.exit)
                return

    def _since(self, cursor: int) -> list[tuple[bytes, bytes]]:
        return [
            (kind, data[max(0, cursor - offset) :]) for offset, kind, data in self.chunks if offset + len(data) > cursor
        ]


def _keep(log: CommandLog) -> None:
    """An ended command's log stays for a host that re-attaches, the KEPT_ENDED most recent ones."""
    with _lock:
        _ended[log.id] = log
        _logs.pop(log.id, None)
        while len(_ended) > KEPT_ENDED:
            _ended.popitem(last=False)


def do_exec(sock: socket.socket, req: dict, rfile) -> None:
    rid = req["id"]
    stdin_size = req.get("stdin_size") or 0
    if not isinstance(stdin_size, int) or stdin_size < 0:
        raise RequestError("bad_request", "stdin_size must be a non-negative integer")
    argv = req.get("argv") or []
    shell = req.get("shell")
    if not argv and not shell:
        raise RequestError("bad_request", "exec needs argv or shell")
    if argv and not all(isinstance(a, str) for a in argv):
        raise RequestError("bad_request", "argv must be a list of strings")
    cwd = _check_cwd(req.get("cwd") or "/workspace")
    with _lock:
        if not _taken.take(rid):
            raise RequestError("duplicate", f"request {rid} was already started")
    env = {**os.environ, **{str(k): str(v) for k, v in (req.get("env") or {}).items()}}
    forwarder = Forwarder(rid) if req.get("egress") else None
    if forwarder:
        env.update(dict.fromkeys(PROXY_VARS, f"http://127.0.0.1:{forwarder.port}"))
    started = time.monotonic()
    try:
        try:
            proc = _spawn(argv or ["/bin/sh", "-c", shell], cwd, env, stdin=bool(stdin_size))
        except OSError as e:
            raise RequestError("spawn_failed", f"{type(e).__name__}: {e}") from None
    except BaseException:  # refused (bad_request) or not started: its forwarder must not outlive it
        if forwarder:
            forwarder.close()
        raise
    log = CommandLog(rid)
    log.pid = proc.pid
    attachment, _, _ = log.attach(0)
    with _lock:
        _running[rid] = proc
        _logs[rid] = log
    if stdin_size:
        threading.Thread(target=_feed_stdin, args=(rfile, proc.stdin, stdin_size), daemon=True).start()
    deadline = started + float(req.get("timeout_s") or 600)
    pump = threading.Thread(
        target=_run_command,
        args=(log, proc, deadline, started, forwarder, req.get("report_detached", True)),
        name=f"command-{proc.pid}",
        daemon=True,
    )
    pump.start()
    _attached(sock, log, attachment, {"pid": proc.pid}, b"s")


def _attached(sock: socket.socket, log: CommandLog, attachment: Attachment, first: dict, kind: bytes) -> None:
    """Serve ``log`` to this connection; if the host goes away the command goes on, detached."""
    try:
        frame_json(sock, kind, first)
        log.serve(sock, attachment)
    except OSError:  # the host went away: the command keeps running for the next one to attach
        log.detach(attachment)
        raise


def _run_command(
    log: CommandLog,
    proc: subprocess.Popen,
    deadline: float,
    started: float,
    forwarder: Forwarder | None,
    report_detached: bool,
) -> None:
    """Read the command's output into its log until it ends, whoever is attached (or nobody)."""
    timed_out = False
    try:
        timed_out = _read_output(log, proc, deadline)
    finally:
        with _lock:
            _running.pop(log.id, None)
        if forwarder:
            forwarder.close()
        proc.stdout.close()
        proc.stderr.close()
        proc.wait()
        _reaped(proc)
    kill_group(proc)  # reap anything the command left behind in its group
    # a platform command (a snapshot's tar) records nothing: what it would claim waits for an agent's
    detached = left_behind(proc.pid) if report_detached else []
    with _lock:
        cancelled = log.id in _cancelled
        _cancelled.discard(log.id)  # its id stays taken (``_taken``); the mark is of no more use
    exit_info = {
        "exit_code": proc.returncode,
        "duration_ms": round((time.monotonic() - started) * 1000, 3),
        "timed_out": timed_out,
        "cancelled": cancelled,
    }
    log.finish(detached, exit_info)
    _keep(log)


def do_attach(sock: socket.socket, req: dict) -> None:
    """Take over a command another connection started (running, or ended and still kept)."""
    target, offset = req.get("target"), req.get("offset", 0)
    if not isinstance(target, str) or not isinstance(offset, int) or isinstance(offset, bool):
        raise RequestError("bad_request", "attach needs a string target and an integer offset")
    with _lock:
        log = _logs.get(target) or _ended.get(target)
        if log is None:  # the host closes it as never run: a start of it still on its way must never run it
            _taken.take(target)
    if log is None:
        raise RequestError("not_found", f"no command {target} running or kept here")
    attachment, start, lost = log.attach(offset)
    _attached(sock, log, attachment, {"pid": log.pid, "offset": start, "lost": lost}, b"a")


class _Output:
    """Output read from a command's log, framed at most once per ``FRAME_INTERVAL_S`` (or at once
    when a whole CHUNK is waiting): every frame becomes a record on the host, and a command writing
    one byte at a time made a record per byte. Within one interval, each stream's bytes go out
    together, in the order the streams first wrote (the interleaving is kept to that resolution)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parts: dict[bytes, bytearray] = {}
        self.size = 0
        self.last = -FRAME_INTERVAL_S  # the first output goes out at once

    def add(self, kind: bytes, data: bytes) -> None:
        self.parts.setdefault(kind, bytearray()).extend(data)
        self.size += len(data)
        if self.size >= CHUNK or self.wait() == 0:
            self.flush()

    def wait(self) -> float | None:
        """Seconds until the waiting bytes are due (0: now), None when nothing waits."""
        if not self.size:
            return None
        return max(0.0, self.last + FRAME_INTERVAL_S - time.monotonic())

    def flush(self) -> None:
        parts, self.parts, self.size = self.parts, {}, 0
        for kind, data in parts.items():
            for start in range(0, len(data), CHUNK):  # frames stay within CHUNK, as the host expects
                frame(self.sock, kind, bytes(data[start : start + CHUNK]))
        self.last = time.monotonic()


def _read_output(log: CommandLog, proc: subprocess.Popen, deadline: float) -> bool:
    """Read the command's pipes into its log until they close, or until it has exited and its process
    group is empty (whatever still holds a pipe then was detached: it is not waited for).
    True if the deadline passed (the group is killed)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, b"1")
    sel.register(proc.stderr, selectors.EVENT_READ, b"2")
    try:
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, None)
    except (AttributeError, OSError):  # no pidfd here: the exit is noticed on the next poll
        pidfd = None
    open_pipes, signalled, exited = 2, False, False
    timed_out = False

    def check_deadline() -> None:
        nonlocal timed_out
        if not timed_out and time.monotonic() >= deadline:
            timed_out = True
            kill_group(proc)

    try:
        while open_pipes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kill_group(proc)
                return True
            if exited and not group_alive(proc.pid):
                _drain(log, sel, check_deadline)
                return timed_out
            for key, _ in sel.select(timeout=min(remaining, 0.05 if exited else 0.5)):
                if key.data is None:  # the pidfd: the command itself has exited
                    sel.unregister(key.fileobj)
                    signalled = True
                    continue
                data = os.read(key.fd, CHUNK)
                if not data:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                else:
                    log.append(key.data, data, check_deadline)
            if timed_out:
                return True
            if not exited and (signalled or pidfd is None):
                exited = _reaped(proc) is not None
        return False
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)


def _drain(log: CommandLog, sel: selectors.BaseSelector, check_deadline, max_chunks: int = 16) -> None:
    """What is already in the pipes after the command ended; a detached writer is not followed."""
    for _ in range(max_chunks):
        ready = [key for key, _ in sel.select(timeout=0) if key.data is not None]
        if not ready:
            return
        for key in ready:
            data = os.read(key.fd, CHUNK)
            if data:
                log.append(key.data, data, check_deadline)
            else:
                sel.unregister(key.fileobj)


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
    digest = hashlib.sha256()
    with as_agent():
        if req.get("exact"):  # replace the last component itself, even a symlink (the lease guard restoring a file)
            path = os.path.normpath(str(req.get("path") or ""))
            parent, name = os.path.split(path)
            if not path.startswith("/") or "\0" in path or os.path.realpath(parent) != parent:
                raise RequestError("forbidden_path", f"{req.get('path')} is not a direct absolute path")
            if not _under(parent, WRITABLE_ROOTS):
                raise RequestError("forbidden_path", f"{path} is outside the writable roots {WRITABLE_ROOTS}")
        else:
            path = resolve(req.get("path"), for_write=True)
            parent, name = os.path.split(path)
        tmp = f".af-{req['id']}.tmp"  # not after the name: a name near NAME_MAX made it too long
        try:
            os.makedirs(parent, exist_ok=True)
            dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise _io_error(e) from None
        try:
            if not _under(os.readlink(f"/proc/self/fd/{dir_fd}"), WRITABLE_ROOTS):  # where it really is
                raise RequestError("forbidden_path", f"{req.get('path')} moved outside the writable roots")
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                int(req.get("mode") or 0o644) & 0o777,
                dir_fd=dir_fd,
            )
            with os.fdopen(fd, "wb") as out:
                remaining = size
                while remaining:
                    data = rfile.read(min(CHUNK, remaining))
                    if not data:
                        raise RequestError("bad_request", f"connection closed {remaining} bytes short")
                    out.write(data)
                    digest.update(data)
                    remaining -= len(data)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # atomic: readers never see half a file
        except OSError as e:
            raise _io_error(e) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            os.close(dir_fd)
    frame_json(sock, b"r", {"path": path, "size": size, "sha256": digest.hexdigest()})


def _fingerprint(path: str, max_bytes: int | None = None) -> dict:
    """What is at ``path`` itself (a symlink is not followed, nor a directory on the way to it):
    kind file | symlink | missing | redirected (a directory on the way is a symlink) | other |
    unreachable (``_fingerprint_one``: the agent's identity cannot look there), and a
    sha256 of the file's bytes or the link's target. A file over ``max_bytes`` (or growing past it
    while read) is not hashed: the agent can make a sparse terabyte in a moment, and hashing it
    would hold the check past its timeout. It gets a ``large:`` signature of its inode, size and
    ctime instead (ctime moves with every write and no agent can set it), as a file no restore
    could put back anyway."""
    parent = os.path.dirname(path)
    if os.path.realpath(parent) != parent:
        return {"kind": "redirected", "sha256": "", "size": 0}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"kind": "missing", "sha256": "", "size": 0}
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path).encode(errors="surrogateescape")
        return {"kind": "symlink", "sha256": hashlib.sha256(target).hexdigest(), "size": len(target)}
    if not stat.S_ISREG(st.st_mode):
        return {"kind": "other", "sha256": "", "size": 0}
    digest, size = hashlib.sha256(), 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between lstat and open
            return {"kind": "other", "sha256": "", "size": 0}
        while (max_bytes is None or size <= max_bytes) and (data := src.read(CHUNK)):
            digest.update(data)
            size += len(data)
        if max_bytes is not None and max(size, st.st_size) > max_bytes:
            st = os.fstat(fd)
            signature = f"large:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_ctime_ns}"
            return {"kind": "file", "sha256": signature, "size": st.st_size, "mode": st.st_mode & 0o777}
    return {"kind": "file", "sha256": digest.hexdigest(), "size": size, "mode": st.st_mode & 0o777}


def do_fingerprint(sock: socket.socket, req: dict) -> None:
    """Fingerprints of absolute paths, as the agent sees them (the lease guard compares them around
    a command): one ``r`` {files: {path: {kind, sha256, size}}}."""
    paths, max_bytes = req.get("paths"), req.get("max_bytes")
    if not (isinstance(paths, list) and all(isinstance(p, str) and p.startswith("/") and "\0" not in p for p in paths)):
        raise RequestError("bad_request", "fingerprint needs a list of absolute paths")
    if max_bytes is not None and not (isinstance(max_bytes, int) and max_bytes >= 0):
        raise RequestError("bad_request", "max_bytes must be a non-negative integer")
    files = {}
    with as_agent():
        for path in paths:
            files[path] = _fingerprint_one(os.path.normpath(path), max_bytes)
    frame_json(sock, b"r", {"files": files})


def _fingerprint_one(path: str, max_bytes: int | None) -> dict:
    """One path's fingerprint; what the agent made unreachable is a kind of its own, never an error:
    one failing path (a directory made a file, its permission taken away, a symlink into /proc at
    the path) failed the whole check before, and left the command's changes unreported."""
    if _under(os.path.realpath(os.path.dirname(path)), ("/proc",)):  # the path itself is not followed
        return {"kind": "unreachable", "sha256": "proc", "size": 0}
    try:
        return _fingerprint(path, max_bytes)
    except NotADirectoryError:  # a directory on the way is a file now: nothing is at the path
        return {"kind": "missing", "sha256": "", "size": 0}
    except OSError as e:
        return {"kind": "unreachable", "sha256": errno.errorcode.get(e.errno, str(e.errno)), "size": 0}


def do_unlink(sock: socket.socket, req: dict) -> None:
    """Remove the file, symlink or empty directory at an exact path (the last component is not
    followed): the lease guard clearing what another actor put at a leased path. A directory with
    anything in it is refused (``io_error``)."""
    path = req.get("path")
    if not (isinstance(path, str) and path.startswith("/") and "\0" not in path):
        raise RequestError("bad_request", "unlink needs an absolute path")
    path = os.path.normpath(path)
    with as_agent():
        parent = os.path.dirname(path)
        if os.path.realpath(parent) != parent or not _under(parent, WRITABLE_ROOTS):
            raise RequestError("forbidden_path", f"{path} is not under a writable root by a direct path")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            try:
                os.rmdir(path)  # an empty one only
            except OSError as e:
                raise _io_error(e) from None
        except OSError as e:
            raise _io_error(e) from None
    frame_json(sock, b"r", {"path": path})


def do_read(sock: socket.socket, req: dict) -> None:
    """A file's bytes; ``exact``: the file at the absolute path itself, no symlink followed anywhere on
    it (the lease guard keeping a holder's bytes: resolving the path first let a command swap a
    symlink in between its fingerprint and this read, and have its own bytes kept as the holder's)."""
    digest, size = hashlib.sha256(), 0
    with as_agent():
        exact = bool(req.get("exact"))
        if exact:
            path = os.path.normpath(str(req.get("path") or ""))
            if (
                not path.startswith("/")
                or "\0" in path
                or os.path.realpath(os.path.dirname(path)) != os.path.dirname(path)
            ):
                raise RequestError("forbidden_path", f"{req.get('path')} is not a direct absolute path")
        else:
            path = resolve(req.get("path"), for_write=False)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block
        except FileNotFoundError:
            raise RequestError("not_found", f"{req.get('path')} does not exist") from None
        except OSError as e:
            raise _io_error(e) from None
        with os.fdopen(fd, "rb") as src:
            st = os.fstat(fd)
            if exact and os.readlink(f"/proc/self/fd/{fd}") != path:  # a directory on the way was swapped
                raise RequestError("forbidden_path", f"{req.get('path')} moved while it was opened")
            if st.st_dev == PROC_DEV:
                raise RequestError("forbidden_path", f"{req.get('path')} resolves into /proc")
            if not stat.S_ISREG(st.st_mode):
                raise RequestError("io_error", f"{req.get('path')} is not a regular file")
            try:
                while data := src.read(CHUNK):
                    frame(sock, b"d", data)
                    digest.update(data)
                    size += len(data)
            except OSError as e:
                if isinstance(e, (BrokenPipeError, ConnectionResetError)):
                    raise
                raise _io_error(e) from None
    frame_json(sock, b"r", {"path": path, "size": size, "sha256": digest.hexdigest()})


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            line = self.rfile.readline(1 << 20)
            try:
                req = json.loads(line)
            except ValueError:
                req = None
            if not (isinstance(req, dict) and isinstance(req.get("id"), str) and isinstance(req.get("op"), str)):
                raise RequestError("bad_request", "expected one JSON object line with string id and op")
            op = req["op"]
            if op == "ping":
                frame_json(self.connection, b"r", {"pong": True, "pid": os.getpid(), "protocol": PROTOCOL})
            elif op == "exec":
                do_exec(self.connection, req, self.rfile)
            elif op == "attach":
                do_attach(self.connection, req)
            elif op == "cancel":
                do_cancel(self.connection, req)
            elif op == "write":
                do_write(self.connection, req, self.rfile)
            elif op == "read":
                do_read(self.connection, req)
            elif op == "fingerprint":
                do_fingerprint(self.connection, req)
            elif op == "unlink":
                do_unlink(self.connection, req)
            else:
                raise RequestError("bad_request", f"unknown op {op!r}")
        except RequestError as e:
            with contextlib.suppress(OSError):
                frame_json(self.connection, b"E", {"code": e.code, "message": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def parse_args(argv: list[str]) -> tuple[str, int]:
    """``[socket] --agent-uid N``: the socket path and the uid every command runs as. Not argparse:
    with what it imports it cost ~7 ms of CPU on every sandbox start, for two arguments."""
    usage = "usage: supervisor.py [socket] --agent-uid UID"
    socket_path, agent_uid, rest = None, None, list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--agent-uid" and rest and rest[0].isdigit():
            agent_uid = int(rest.pop(0))
        elif arg.startswith("--agent-uid=") and arg.partition("=")[2].isdigit():
            agent_uid = int(arg.partition("=")[2])
        elif not arg.startswith("-") and socket_path is None:
            socket_path = arg
        else:
            raise SystemExit(f"{usage}\nunexpected argument: {arg}")
    if agent_uid is None:
        raise SystemExit(f"{usage}\n--agent-uid is required")
    return socket_path or "/run/astraforge/supervisor.sock", agent_uid


def main() -> None:
    global AGENT_UID, EGRESS_SOCKET
    socket_path, AGENT_UID = parse_args(sys.argv[1:])
    EGRESS_SOCKET = os.path.join(os.path.dirname(socket_path), "egress.sock")
    lock_down(AGENT_UID)  # before any thread exists
    # bwrap bounds each process's address space (RLIMIT_AS = the sandbox's memory): every thread's
    # stack (8 MiB by default) and malloc arena (64 MiB) counts, and a command has two threads here
    threading.stack_size(THREAD_STACK_BYTES)
    _libc.mallopt(M_ARENA_MAX, 2)
    os.umask(0o022)
    if os.getpid() == 1:  # docker: orphans come to us; bwrap's own init reaps them otherwise
        # no lock may be taken in a signal handler (a nested one would deadlock): the C-level handler
        # writes to a pipe, a thread reaps
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)

        def reaper() -> None:
            while os.read(wake_read, 512):
                reap_orphans()

        threading.Thread(target=reaper, name="reaper", daemon=True).start()
    else:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    Forwarder("-", EGRESS_PORT)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    server = Server(socket_path, Handler)
    os.chmod(socket_path, 0o600)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main()
