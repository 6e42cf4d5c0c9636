"""The egress proxy: the only way out of a sandbox, enforcing a per-sandbox allowlist.

It runs on the host and listens on a unix socket in each sandbox's control directory; inside the
sandbox the supervisor's forwarder exposes that socket as ``127.0.0.1:3128`` and execs get
``HTTP(S)_PROXY`` pointing at it. The sandbox itself has no network interface but loopback, so
there is no other route.

- ``CONNECT host:port`` (HTTPS) is tunnelled when the host is allowed for CONNECT.
- ``METHOD http://host/...`` (plain HTTP) is forwarded when host and method are allowed; for hosts
  with a configured credential the proxy adds it (e.g. ``Authorization: Bearer ...``), so secrets
  never enter the sandbox. The sandbox may hold a placeholder credential; the proxy replaces it.
- Each attempt is reported (``egress.allowed`` / ``egress.denied``) with the command that made
  it: execs carry their command id as the proxy user name.

Allowlist rules: ``host``, ``*.domain`` (any subdomain), optionally ``host:port``, optionally
prefixed by methods: ``"GET,POST api.example.com"``. A bare rule allows every method.
"""

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)
MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class Rule:
    host: str
    port: int | None
    methods: frozenset[str] | None

    @classmethod
    def parse(cls, text: str) -> "Rule":
        parts = text.split()
        if not parts or len(parts) > 2:
            raise ValueError(f"egress rule {text!r}: expected '[METHODS ]host[:port]'")
        methods = frozenset(m.upper() for m in parts[0].split(",")) if len(parts) == 2 else None
        host, _, port = parts[-1].lower().partition(":")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"egress rule {text!r}: bad host or port")
        return cls(host, int(port) if port else None, methods)

    def allows(self, host: str, port: int, method: str) -> bool:
        if self.host.startswith("*."):
            host_ok = host.endswith(self.host[1:]) and host != self.host[2:]
        else:
            host_ok = host == self.host
        return host_ok and self.port in (None, port) and (self.methods is None or method in self.methods)


@dataclass(frozen=True)
class Decision:
    command_id: str | None
    host: str
    port: int
    method: str
    url: str | None
    allowed: bool
    reason: str | None
    credential_injected: bool


def parse_rules(rules: list[str]) -> list[Rule]:
    return [Rule.parse(r) for r in rules]


class EgressProxy:
    """Serves each sandbox's socket on one asyncio loop (in its own thread)."""

    def __init__(self, credentials: dict[str, str], report: Callable[[str, Decision], None]) -> None:
        self.credentials = {h.lower(): v for h, v in credentials.items()}  # host -> "Header: value"
        self.report = report
        self.loop = asyncio.new_event_loop()
        self.servers: dict[str, asyncio.AbstractServer] = {}
        self._thread = None

    def start(self) -> None:
        import threading

        self._thread = threading.Thread(target=self.loop.run_forever, name="egress-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        async def close_all() -> None:
            for server in self.servers.values():
                server.close()
            for server in list(self.servers.values()):
                await server.wait_closed()
            self.servers.clear()

        if self._thread is None:
            self.loop.close()
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    def serve(self, sandbox_id: str, socket_path: Path, rules: list[Rule]) -> None:
        """Open (or reopen after a restart) the sandbox's proxy socket."""
        future = asyncio.run_coroutine_threadsafe(self._serve(sandbox_id, socket_path, rules), self.loop)
        future.result(timeout=10)

    def close(self, sandbox_id: str) -> None:
        server = self.servers.pop(sandbox_id, None)
        if server:
            self.loop.call_soon_threadsafe(server.close)

    async def _serve(self, sandbox_id: str, socket_path: Path, rules: list[Rule]) -> None:
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        server = await asyncio.start_unix_server(
            lambda r, w: self._handle(sandbox_id, rules, r, w), path=str(socket_path)
        )
        os.chmod(socket_path, 0o666)  # the directory (0700, the sandbox's uid) is the access control
        self.servers[sandbox_id] = server

    async def _handle(self, sandbox_id, rules, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await _reply(writer, 400, "malformed request line")
            return
        headers = [line for line in lines[1:] if line]
        command_id = _proxy_user(headers)
        method = method.upper()
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            url = None
        else:
            if not target.startswith("http://"):
                await _reply(writer, 400, "plain HTTP needs an absolute http:// URL (use CONNECT for https)")
                return
            hostport, _, path = target[len("http://") :].partition("/")
            host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "80")
            url = target
        host = host.strip("[]").lower()
        port = int(port) if port.isdigit() else (443 if method == "CONNECT" else 80)
        allowed = any(rule.allows(host, port, method) for rule in rules)
        credential = self.credentials.get(host) if allowed and method != "CONNECT" else None
        reason = None if allowed else "not in the sandbox's egress allowlist"
        decision = Decision(command_id, host, port, method, url, allowed, reason, credential is not None)
        self.report(sandbox_id, decision)
        if not allowed:
            await _reply(writer, 403, f"egress to {host}:{port} ({method}) is not allowed for this sandbox")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=10)
        except (OSError, TimeoutError) as e:
            await _reply(writer, 502, f"upstream {host}:{port} unreachable: {e}")
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            kept = [h for h in headers if not h.lower().startswith(("proxy-", "connection:"))]
            if credential:
                name = credential.split(":", 1)[0].lower()
                kept = [h for h in kept if not h.lower().startswith(name + ":")] + [credential]
            request = (
                f"{method} /{path} {version}\r\n" + "".join(f"{h}\r\n" for h in kept) + "Connection: close\r\n\r\n"
            )
            up_writer.write(request.encode("latin-1"))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def _proxy_user(headers: list[str]) -> str | None:
    for h in headers:
        name, _, value = h.partition(":")
        if name.strip().lower() == "proxy-authorization" and value.strip().lower().startswith("basic "):
            with contextlib.suppress(ValueError):
                return base64.b64decode(value.strip()[6:]).decode().split(":", 1)[0] or None
    return None


async def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = message.encode()
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()
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
