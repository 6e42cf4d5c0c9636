"""The egress proxy: the only way out of a sandbox, enforcing a per-sandbox allowlist.

It runs on the host and listens on a unix socket in each sandbox's control directory; inside the
sandbox the supervisor's forwarder exposes that socket as ``127.0.0.1:3128`` and execs get
``HTTP(S)_PROXY`` pointing at it. The sandbox itself has no network interface but loopback, so
there is no other route.

- ``CONNECT host:port`` (HTTPS) is tunnelled when allowed; it must be the connection's first
  request, is checked once and then carries opaque TLS.
- ``METHOD http://host/...`` (plain HTTP): every request on a kept-alive connection is parsed
  strictly (``egress_http``), checked on its own and forwarded by its own framing, so a pipelined
  request gets the same checks as the first. The ``Host`` header must agree with the absolute-URI
  target (a mismatch is refused with 400, never rewritten). For hosts with a configured credential
  the proxy adds it (e.g. ``Authorization: Bearer ...``), so secrets never enter the sandbox.
- Each request is checked against the rules (``egress_rules``), then its name is resolved once and
  every address checked (``egress_addresses``: only globally routable addresses that are neither
  this host's nor a platform service's); the proxy connects to exactly a checked address, never
  to the name again (no DNS rebinding between check and connect).
- Platform upstreams (the model gateway) are operator settings: reached by their name only from a
  sandbox the platform granted them to, whatever the tenant's rules say, and at any address.
- Limits: a request head must arrive within ``header_timeout_s`` (slowloris), a sandbox holds at
  most ``max_connections`` at once, and past ``denials_recorded`` denials per window the rest are
  answered but recorded as one summary record.
- Each attempt is reported (``egress.allowed`` when a request goes out, ``egress.denied``) with the
  command that made it, as the sandbox's supervisor announced it on the connection's first line
  (``_proxy_user``): an exec gets a forwarder port of its own, whose connections the supervisor
  tags with its command id; the shared port (3128) is unattributed (``command_id`` None). Only the
  supervisor can reach this socket (the control directory is closed to the agent's uid), so
  nothing a request says (a proxy user name) is taken as who sent it.

Not protected here: what an allowed upstream does with the traffic; TLS inside a CONNECT tunnel is
not inspected (methods and paths of HTTPS requests are the tenant's own business); a slow request
body or a slow upstream is not timed out (the connection cap bounds how many a sandbox can hold);
any process of the sandbox can connect to a running command's forwarder port and be recorded under
that command, and a process a command leaves behind is unattributed once the command ends.
"""

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from astraforge.config import Settings
from astraforge.sandbox.egress_addresses import AddressPolicy, parse_address
from astraforge.sandbox.egress_http import Framing, Head, Malformed, body_framing, copy_body, read_head
from astraforge.sandbox.egress_rules import Rule, normalize_host, parse_rule

LOG = logging.getLogger(__name__)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
              "upgrade", "expect"}  # fmt: skip
FRAMING = {"host", "content-length", "transfer-encoding"}  # never dropped because a Connection header names them
REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 429: "Too Many Requests", 502: "Bad Gateway"}
CONNECT_TIMEOUT_S = 10.0
LINGER_S = 2.0
MAX_INTERIM = 8  # 1xx answers relayed before one final response (RFC 9110 sets no limit; we do)


@dataclass(frozen=True)
class EgressDecision:
    command_id: str | None
    host: str
    port: int
    method: str | None
    url: str | None
    allowed: bool
    reason: str | None
    credential_injected: bool
    address: str | None = None  # the address connected to (allowed) or refused
    suppressed: int = 0  # a summary of this many denials past the rate limit


@dataclass(frozen=True)
class PlatformUpstream:
    """An operator-configured upstream (``egress_platform_upstreams``), e.g. the model gateway."""

    name: str
    host: str
    port: int

    @classmethod
    def parse(cls, name: str, target: str) -> "PlatformUpstream":
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
            raise ValueError(f"platform upstream {name!r}: expected 'host:port', got {target!r}")
        return cls(name, host.removeprefix("[").removesuffix("]"), int(port))


@dataclass(frozen=True)
class EgressLimits:
    header_timeout_s: float = 10.0
    max_connections: int = 32
    denials_recorded: int = 20
    denial_window_s: float = 10.0

    @classmethod
    def from_settings(cls, s: Settings) -> "EgressLimits":
        return cls(
            s.egress_header_timeout_s, s.egress_max_connections, s.egress_denials_recorded, s.egress_denial_window_s
        )


class DenialLimiter:
    """Fixed windows: the first ``limit`` denials of a window are recorded one by one, the rest
    only counted (``drain`` hands the count to one summary record)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.started, self.count, self.suppressed = -window_s, 0, 0

    def admit(self) -> bool:
        now = self.clock()
        if now - self.started >= self.window_s:
            self.started, self.count = now, 0
        self.count += 1
        if self.count <= self.limit:
            return True
        self.suppressed += 1
        return False

    def seconds_left(self) -> float:
        return max(0.0, self.started + self.window_s - self.clock())

    def drain(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n


@dataclass
class _Sandbox:
    sandbox_id: str
    rules: list[Rule]
    grants: dict[str, PlatformUpstream]
    limiter: DenialLimiter
    connections: int = 0
    flush: asyncio.TimerHandle | None = None
    server: asyncio.AbstractServer | None = field(default=None, repr=False)
    # its connections' tasks, ended when the sandbox stops (a connection whose sandbox went away could
    # wait forever: collected mid-await, its sockets were reported by the garbage collector)
    tasks: set[asyncio.Task] = field(default_factory=set, repr=False)


@dataclass(frozen=True)
class _Request:
    """What one request asks for, parsed; ``url`` is None for CONNECT."""

    method: str
    host: str  # canonical (normalize_host)
    port: int
    url: str | None
    path: str
    head: Head
    command_id: str | None


class Refused(Exception):
    """A request the proxy answers with ``status`` and records as denied."""

    def __init__(self, status: int, reason: str, address: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.address = status, reason, address


def parse_rules(rules: list[str]) -> list[Rule]:
    """The rules of a sandbox as recorded. A rule that no longer parses (recorded before the
    grammar was strict) is dropped, which denies what it named."""
    parsed = []
    for text in rules:
        try:
            parsed.append(parse_rule(text))
        except ValueError as e:
            LOG.warning("dropping egress rule: %s", e)
    return parsed


def chmod_socket(path: Path, mode: int) -> None:
    """chmod the socket at ``path`` without following a link: the control directory belongs to the
    sandbox's supervisor, which could swap the path for a symlink to a host file between bind and
    chmod. The inode opened O_PATH|O_NOFOLLOW is checked to be a socket and changed through its fd."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(f"{path} is no longer the egress socket")
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


class EgressProxy:
    """Serves each sandbox's socket on one asyncio loop (in its own thread)."""

    def __init__(
        self,
        credentials: dict[str, str],
        report: Callable[[str, EgressDecision], None],
        policy: AddressPolicy | None = None,
        upstreams: dict[str, PlatformUpstream] | None = None,
        limits: EgressLimits | None = None,
    ) -> None:
        self.credentials = {h.lower(): v for h, v in credentials.items()}  # host -> "Header: value"
        self.report = report
        self.policy = policy or AddressPolicy()
        self.upstreams = upstreams or {}
        self.limits = limits or EgressLimits()
        self.loop = asyncio.new_event_loop()
        self.sandboxes: dict[str, _Sandbox] = {}
        self._tasks: set[asyncio.Task] = set()  # every open connection's task (the loop holds them weakly)
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, report: Callable[[str, EgressDecision], None]) -> "EgressProxy":
        upstreams = {n: PlatformUpstream.parse(n, t) for n, t in settings.egress_platform_upstreams.items()}
        return cls(
            settings.egress_credentials,
            report,
            AddressPolicy.from_settings(settings),
            upstreams,
            EgressLimits.from_settings(settings),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, name="egress-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        async def close_all() -> None:
            for sandbox_id in list(self.sandboxes):
                self._close(sandbox_id)
            # the connections still open end here, through their own ``finally`` (each closes its
            # sockets): left pending, they died with the loop and left their sockets to the collector
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread is None:
            self.loop.close()
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    def serve(self, sandbox_id: str, socket_path: Path, rules: list[Rule], grants: tuple[str, ...] = ()) -> None:
        """Open (or reopen after a restart) the sandbox's proxy socket. ``grants`` name platform
        upstreams the platform (never the tenant) gave this sandbox."""
        unknown = set(grants) - set(self.upstreams)
        if unknown:
            raise ValueError(f"unknown platform upstream(s): {', '.join(sorted(unknown))}")
        limiter = DenialLimiter(self.limits.denials_recorded, self.limits.denial_window_s)
        sandbox = _Sandbox(sandbox_id, rules, {g: self.upstreams[g] for g in grants}, limiter)
        future = asyncio.run_coroutine_threadsafe(self._serve(sandbox, socket_path), self.loop)
        future.result(timeout=10)

    def close(self, sandbox_id: str, end_connections: bool = False) -> None:
        """Stop serving the sandbox's proxy socket. Its open connections go on (a partition handed to
        another instance keeps its sandboxes' traffic) unless ``end_connections`` (the sandbox stops)."""
        self.loop.call_soon_threadsafe(self._close, sandbox_id, end_connections)

    def _close(self, sandbox_id: str, end_connections: bool = True) -> None:
        sandbox = self.sandboxes.pop(sandbox_id, None)
        if sandbox:
            self._flush(sandbox)
            if sandbox.server:
                sandbox.server.close()
            for task in list(sandbox.tasks) if end_connections else ():  # their finally closes their sockets
                task.cancel()

    async def _serve(self, sandbox: _Sandbox, socket_path: Path) -> None:
        old = self.sandboxes.pop(sandbox.sandbox_id, None)
        if old and old.server:
            old.server.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        sandbox.server = await asyncio.start_unix_server(
            lambda r, w: self._handle(sandbox, r, w), path=str(socket_path)
        )
        # the control directory (0700, the supervisor's uid) is the access control
        chmod_socket(socket_path, 0o666)
        self.sandboxes[sandbox.sandbox_id] = sandbox

    # -- one client connection --------------------------------------------------------------
    async def _handle(self, sandbox: _Sandbox, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        sandbox.tasks.add(task)
        self._tasks.add(task)  # held by the proxy too: a closed sandbox's record is dropped, its connections are not
        try:
            await self._connection(sandbox, reader, writer)
        except asyncio.CancelledError:
            pass  # ours (the sandbox stopped, or the proxy): a cancelled result would be logged as an error
        finally:
            sandbox.tasks.discard(task)
            self._tasks.discard(task)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def _connection(self, sandbox: _Sandbox, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.limits.header_timeout_s):
                command_id = await _proxy_user(reader)
        except (TimeoutError, OSError):
            command_id = None
        cap = self.limits.max_connections
        if sandbox.connections >= cap:
            self._deny(sandbox, command_id, "", 0, None, None, f"too many open connections (cap {cap})")
            await _reply(reader, writer, 429, f"this sandbox already has {cap} egress connections open")
            return
        sandbox.connections += 1
        try:
            await self._requests(sandbox, reader, writer, command_id)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug here must not take the proxy's loop down with it
            LOG.exception("egress connection of %s failed", sandbox.sandbox_id)
        finally:
            sandbox.connections -= 1

    async def _requests(self, sandbox: _Sandbox, reader, writer, command_id: str | None) -> None:
        first = True
        while True:
            received: list[bytes] = []
            request = None
            try:
                try:
                    async with asyncio.timeout(self.limits.header_timeout_s):
                        head = await read_head(reader, received)
                except TimeoutError:
                    if received or first:  # a head that never ends; an idle kept-alive connection just closes
                        timeout = self.limits.header_timeout_s
                        raise Refused(408, f"request head not complete within {timeout:g} s") from None
                    return
                if head is None:
                    return
                request = self._parse(head, command_id)
                if request.method == "CONNECT":
                    if not first:
                        raise Refused(400, "malformed request: CONNECT after another request on the connection")
                    await self._tunnel(sandbox, request, reader, writer)
                    return
                if not await self._forward(sandbox, request, reader, writer):
                    return
            except (Malformed, Refused) as e:
                status, reason, address = (
                    (400, f"malformed request: {e}", None)
                    if isinstance(e, Malformed)
                    else (e.status, e.reason, e.address)
                )
                r = request  # None when the head itself is at fault
                self._deny(
                    sandbox,
                    command_id,
                    r.host if r else "",
                    r.port if r else 0,
                    r.method if r else None,
                    r.url if r else None,
                    reason,
                    address,
                )
                await _reply(reader, writer, status, reason)
                return
            first = False

    def _parse(self, head: Head, command_id: str | None) -> _Request:
        parts = head.start.split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
            raise Malformed(f"bad request line {head.start[:200]!r}")
        method, target, version = parts
        if not target or any(c <= " " or c == "\x7f" for c in target):
            raise Malformed("a control character in the request target")
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise Malformed(f"unsupported version {version[:20]!r}")
        if method == "CONNECT":
            host, port = _authority(target, default_port=None)
            return _Request(method, host, port, None, "", head, command_id)
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() != "http":
            raise Malformed("plain HTTP needs an absolute http:// URL (use CONNECT for https)")
        split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, path = rest[:split], rest[split:]
        host, port = _authority(authority, default_port=80)
        return _Request(method, host, port, target, path if path.startswith("/") else "/" + path, head, command_id)

    async def _connect(self, sandbox: _Sandbox, r: _Request):
        """The checked connection for a request: (reader, writer, address); raises Refused."""
        upstream = self.upstreams.get(r.host)
        if upstream is not None and r.host not in sandbox.grants:
            raise Refused(403, f"platform upstream {r.host!r} is not granted to this sandbox")
        if upstream is not None:  # the operator's own: any address, no rule needed
            host, port = upstream.host, upstream.port
            addresses = await self._resolve(host, port)
        else:
            if not any(rule.allows(r.host, r.port, r.method) for rule in sandbox.rules):
                raise Refused(403, f"egress to {r.host}:{r.port} ({r.method}) is not in the sandbox's egress allowlist")
            host, port = r.host, r.port
            addresses = await self._resolve(host, port)
            for address in addresses:
                why = self.policy.refusal(address)
                if why:
                    raise Refused(403, f"egress to {r.host}:{r.port} refused: {why}", str(address))
        errors = []
        for address in addresses:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    up_reader, up_writer = await asyncio.open_connection(
                        str(address), port, flags=socket.AI_NUMERICHOST
                    )
                return up_reader, up_writer, str(address)
            except (OSError, TimeoutError) as e:
                errors.append(f"{address}: {e or type(e).__name__}")
        raise Refused(502, f"upstream {host}:{port} unreachable ({'; '.join(errors)})", str(addresses[0]))

    async def _resolve(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Resolve once, off the loop (the executor): every address found, in resolver order."""
        literal = parse_address(host)
        if literal is not None:
            return [literal]
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as e:
            raise Refused(502, f"cannot resolve {host}: {e or 'timed out'}") from None
        addresses = [ipaddress.ip_address(info[4][0].partition("%")[0]) for info in infos]
        if not addresses:
            raise Refused(502, f"cannot resolve {host}: no address")
        return list(dict.fromkeys(addresses))

    async def _tunnel(self, sandbox, r: _Request, reader, writer) -> None:
        up_reader, up_writer, address = await self._connect(sandbox, r)
        self._allow(sandbox, r, address, credential=False)
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        except OSError:
            up_writer.close()  # the sandbox went away before the tunnel opened
            raise
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _forward(self, sandbox, r: _Request, reader, writer) -> bool:
        """One plain-HTTP request and its response; whether the connection may carry another."""
        hosts = r.head.get_all("host")
        if len(hosts) > 1:
            raise Malformed("more than one Host header")
        if hosts and _host_header(hosts[0]) != (r.host, r.port):
            why = f"Host header {hosts[0][:200]!r} does not agree with the request target {r.host}:{r.port}"
            raise Refused(400, why)
        framing = body_framing(r.head, response=False)
        up_reader, up_writer, address = await self._connect(sandbox, r)
        try:
            credential = self.credentials.get(r.host)
            self._allow(sandbox, r, address, credential=credential is not None)
            connection = r.head.tokens("connection")
            drop = HOP_BY_HOP | (connection - FRAMING)  # dropping a framing header would smuggle the body
            kept = [(n, v) for n, v in r.head.fields if n.lower() not in drop]
            if not hosts:
                kept.insert(0, ("Host", r.host if r.port == 80 else f"{r.host}:{r.port}"))
            if credential:
                name, _, value = credential.partition(":")
                kept = [(n, v) for n, v in kept if n.lower() != name.strip().lower()] + [(name.strip(), value.strip())]
            lines = [f"{r.method} {r.path} HTTP/1.1", *(f"{n}: {v}" for n, v in kept), "Connection: close", "", ""]
            if "100-continue" in r.head.tokens("expect") and (framing.kind == "chunked" or framing.length):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await copy_body(reader, up_writer, framing, prefix="\r\n".join(lines).encode("latin-1"))
            keep_alive = "close" not in connection and (r.head.start.endswith("1.1") or "keep-alive" in connection)
            return await _relay_response(r, up_reader, reader, writer, keep_alive)
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                up_writer.close()

    # -- records ----------------------------------------------------------------------------
    def _allow(self, sandbox: _Sandbox, r: _Request, address: str, credential: bool) -> None:
        self.report(
            sandbox.sandbox_id,
            EgressDecision(r.command_id, r.host, r.port, r.method, r.url, True, None, credential, address),
        )

    def _deny(self, sandbox: _Sandbox, command_id, host, port, method, url, reason, address=None) -> None:
        if sandbox.limiter.admit():
            decision = EgressDecision(command_id, host, port, method, url, False, reason, False, address)
            self.report(sandbox.sandbox_id, decision)
        elif sandbox.flush is None:
            sandbox.flush = self.loop.call_later(sandbox.limiter.seconds_left(), self._flush, sandbox)

    def _flush(self, sandbox: _Sandbox) -> None:
        if sandbox.flush:
            sandbox.flush.cancel()
            sandbox.flush = None
        n = sandbox.limiter.drain()
        if n:
            limits = self.limits
            reason = (
                f"{n} more denied attempts suppressed (over {limits.denials_recorded} per {limits.denial_window_s:g} s)"
            )
            self.report(sandbox.sandbox_id, EgressDecision(None, "*", 0, None, None, False, reason, False, None, n))


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` of a request target, canonical; no userinfo, a port in 1..65535."""
    if "@" in text:
        raise Malformed("userinfo in the request target")
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            raise Malformed(f"bad authority {text[:200]!r}")
        port = rest[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if (not port and default_port is None) or (port and not (port.isascii() and port.isdigit() and len(port) <= 5)):
        raise Malformed(f"bad port in {text[:200]!r}")
    number = int(port) if port else default_port
    if not 1 <= number <= 65535:
        raise Malformed(f"bad port in {text[:200]!r}")
    try:
        return normalize_host(host), number
    except ValueError as e:
        raise Malformed(str(e)) from None


def _host_header(value: str) -> tuple[str, int] | None:
    try:
        return _authority(value, default_port=80)
    except Malformed:
        return None


async def _relay_response(r: _Request, up_reader, reader, writer, keep_alive: bool) -> bool:
    """Relay the response (interim 1xx first, at most ``MAX_INTERIM``, each drained before the next
    is read: an upstream streaming endless 103s at a sandbox that never reads must not fill the
    proxy's memory); whether the client connection stays usable."""
    for _ in range(MAX_INTERIM + 1):
        try:
            head = await read_head(up_reader, [])
            if head is None:
                raise Malformed("the upstream closed without answering")
            status_line = head.start.split(" ", 2)
            status = int(status_line[1]) if len(status_line) >= 2 and status_line[1].isdigit() else 0
            if not 100 <= status <= 599 or status == 101:
                raise Malformed(f"bad status line {head.start[:100]!r}")
            framing = body_framing(head, response=True)
        except Malformed as e:
            await _reply(reader, writer, 502, f"upstream answer refused: {e}")
            return False
        if status >= 200:
            break
        # an interim answer (100 Continue, 103 Early Hints): relay it, then read the final one. Wait
        # for the client to take it first: an upstream may send interim heads without end
        writer.write(
            f"{head.start}\r\n".encode("latin-1")
            + b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in head.fields)
            + b"\r\n"
        )
        await writer.drain()
    else:
        await _reply(reader, writer, 502, f"upstream answer refused: more than {MAX_INTERIM} interim responses")
        return False
    if r.method == "HEAD" or status in (204, 304):
        framing = Framing("length", 0)
    keep_alive = keep_alive and framing.kind != "close"
    kept = [(n, v) for n, v in head.fields if n.lower() not in HOP_BY_HOP | (head.tokens("connection") - FRAMING)]
    lines = [head.start, *(f"{n}: {v}" for n, v in kept)]
    if not keep_alive:
        lines.append("Connection: close")
    try:
        await copy_body(up_reader, writer, framing, prefix="\r\n".join([*lines, "", ""]).encode("latin-1"))
    except (Malformed, asyncio.IncompleteReadError):
        return False  # the client sees a truncated body; the connection ends with it
    return keep_alive


async def _proxy_user(reader: asyncio.StreamReader) -> str | None:
    """The command a connection belongs to, from the line the sandbox's supervisor sends before
    anything of the connection (``AF-EXEC <command id>``, ``-`` for none; its ``Forwarder``).
    Only the supervisor can reach this socket, so unlike a proxy user name in a request, the
    sandbox cannot choose it."""
    try:
        line = await reader.readuntil(b"\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    tag, _, command_id = line.decode("latin-1").strip().partition(" ")
    return command_id if tag == "AF-EXEC" and command_id not in ("", "-") else None


async def _reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """Answer and close, lingering briefly: closing a unix socket with unread input resets it, and
    the peer would lose the answer (e.g. the 429 to a connection whose request was never read)."""
    body = message.encode()
    writer.write(
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError, RuntimeError, TimeoutError):
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            while await reader.read(65536):
                pass
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()
