"""An upstream with a globally routable address that never leaves this machine.

The egress proxy refuses loopback, private and reserved addresses, so a test upstream on the
host's 127.0.0.1 can no longer be reached (that is the point). Instead each test session creates
a network namespace joined to the host by a veth pair and runs tests/upstream_server.py in it.

Addresses: a /30 out of 192.31.196.0/24. That block is AS112's (RFC 7534/7535): globally routable
(``ipaddress.ip_address("192.31.196.2").is_global`` is True, so the proxy treats it as any public
host), and in the real world it only sinks stray reverse-DNS queries. Here it never leaves the
machine: the /30 is a connected route on the host end of the veth, more specific than any
default route, and the namespace has no other interface and no route out. The host end (.1) is
an address of this host (the proxy refuses it as one); the namespace end (.2) serves.

Sessions running at the same time each take a free /30 (under a lock file), so their routes do
not collide. Needs root (``ip netns``), as the rest of the suite does.
"""

import contextlib
import fcntl
import ipaddress
import json
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import wait_until

BLOCK = ipaddress.ip_network("192.31.196.0/24")
SLICES = list(BLOCK.subnets(new_prefix=30))
SERVER = Path(__file__).with_name("upstream_server.py")
LOCK = Path("/tmp/astraforge-test-netns.lock")


def upstream_addresses() -> list[str]:
    """Every address a session's upstream may get (the tests' credential map names them all)."""
    return [str(net[2]) for net in SLICES]


@dataclass
class NetnsUpstream:
    namespace: str
    host_end: str  # the host's side of the veth: an address of this host
    ip: str  # where the upstream listens, inside the namespace
    port: int
    log: Path

    def requests(self) -> list[dict]:
        """What the upstream received, one dict per request: local (address), head (raw), body."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _taken() -> set[str]:
    out = subprocess.run(["ip", "-j", "-4", "addr"], check=True, capture_output=True, text=True).stdout
    return {a["local"] for link in json.loads(out) for a in link.get("addr_info", [])}


@contextlib.contextmanager
def netns_upstream(port: int, log: Path) -> Iterator[NetnsUpstream]:
    """A namespace with the upstream server on ``<ip>:<port>``; everything is removed afterwards."""
    tag = secrets.token_hex(3)
    namespace, host_if, ns_if = f"af-egress-{tag}", f"afh{tag}", f"afn{tag}"
    LOCK.touch()
    with LOCK.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken = _taken()
        net = next((n for n in SLICES if str(n[1]) not in taken), None)
        if net is None:
            raise RuntimeError(f"no free /30 left in {BLOCK}")
        _ip("netns", "add", namespace)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", namespace)
        _ip("addr", "add", f"{net[1]}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
    ip = str(net[2])
    server = None
    try:
        _ip("-n", namespace, "addr", "add", f"{ip}/30", "dev", ns_if)
        _ip("-n", namespace, "link", "set", ns_if, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        cmd = ["ip", "netns", "exec", namespace, sys.executable, str(SERVER), str(port), str(log)]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _answers(ip, port), timeout=30, what="the namespace's upstream")
        log.write_text("")  # readiness probes are not requests
        yield NetnsUpstream(namespace, str(net[1]), ip, port, log)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", host_if)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", namespace)


def _answers(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=1):
            return True
    except OSError:
        return False
