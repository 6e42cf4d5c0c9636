"""Which addresses the egress proxy may connect to for a tenant: only globally routable ones that
are neither this host's nor a platform service's.

Refused, whatever a tenant's allowlist says: loopback, unspecified, private (RFC 1918, unique
local fc00::/7), link-local, shared address space (CGNAT 100.64.0.0/10), multicast, every other
reserved, benchmarking or documentation range (anything ``ipaddress`` does not call global, plus
the deprecated 6to4 relay anycast 192.88.99.0/24 and site-local fec0::/10), IPv6 forms that embed
an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, NAT64) when that IPv4 address is refused,
the addresses the platform's own services are configured at (Kafka, PostgreSQL, the API, S3, the
platform upstreams), and any address of this host (a public address of the machine reaches every
service listening on all interfaces).

Not protected: a platform service on another machine at a global address that the settings do
not name; names are checked by the addresses they resolve to, so a service's other names are
covered only through its address.
"""

import ipaddress
import logging
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

from astraforge.config import Settings

LOG = logging.getLogger(__name__)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

CGNAT = ipaddress.ip_network("100.64.0.0/10")
RFC1918 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
ULA = ipaddress.ip_network("fc00::/7")
EXTRA_RESERVED = [ipaddress.ip_network(n) for n in ("192.88.99.0/24", "fec0::/10")]
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: the operator's own translators


def parse_address(text: str) -> Address | None:
    """An IP literal (``[...]`` allowed around IPv6), or None for anything else."""
    try:
        return ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour:
        return "6to4", ip.sixtofour
    if ip in NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def range_refusal(ip: Address) -> str | None:
    """Why ``ip`` is not a globally routable unicast address, or None if it is (pure: no I/O)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded:
            form, v4 = embedded
            inner = range_refusal(v4)
            if inner is None and form != "IPv4-compatible":  # that one is deprecated: never a destination
                return None
            why = inner.removeprefix(f"address {v4} is ") if inner else "deprecated"
            return f"address {ip} is the {form} form of {v4} ({why})"
        if ip in NAT64_LOCAL:
            return f"address {ip} is in the local-use NAT64 prefix 64:ff9b:1::/48"
    if ip.is_unspecified:
        return f"address {ip} is unspecified"
    if ip.is_loopback:
        return f"address {ip} is loopback"
    if ip.is_link_local:
        return f"address {ip} is link-local"
    if ip.is_multicast:
        return f"address {ip} is multicast"
    if ip in CGNAT:
        return f"address {ip} is in the shared address space (CGNAT, 100.64.0.0/10)"
    if any(ip in net for net in RFC1918):
        return f"address {ip} is private (RFC 1918)"
    if ip in ULA:
        return f"address {ip} is private (unique local, fc00::/7)"
    if not ip.is_global or any(ip in net for net in EXTRA_RESERVED):
        return f"address {ip} is reserved (not globally routable)"
    return None


def is_local(ip: Address) -> bool:
    """Whether ``ip`` is an address of this host (binding to it succeeds only then)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


class AddressPolicy:
    """The address check: the pure range rules, the platform's service addresses, this host."""

    def __init__(self, services: dict[Address, str] | None = None) -> None:
        self.services = services or {}  # address -> which platform service lives there

    @classmethod
    def from_settings(cls, settings: Settings) -> "AddressPolicy":
        """Resolves the platform's service hosts once (at start: a name that later moves is not
        followed; its new address is still refused if it is private or this host's)."""
        services: dict[Address, str] = {}
        for label, host in service_hosts(settings):
            for ip in resolve_now(host):
                services.setdefault(ip, label)
        return cls(services)

    def refusal(self, ip: Address) -> str | None:
        """Why the proxy must not connect a tenant to ``ip``, or None."""
        reason = range_refusal(ip)
        if reason:
            return reason
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        for candidate in (ip, inner[1]) if inner else (ip,):
            if candidate in self.services:
                return f"address {ip} is a platform service ({self.services[candidate]})"
            if is_local(candidate):
                return f"address {ip} is an address of this host"
        return None


def service_hosts(settings: Settings) -> Iterable[tuple[str, str]]:
    """(label, host) for every service the platform itself runs or talks to."""
    for server in settings.kafka_bootstrap.split(","):
        yield "Kafka", _host_of(server.strip())
    db = conninfo_to_dict(settings.database_dsn())
    for key in ("host", "hostaddr"):
        for host in str(db.get(key) or "").split(","):
            if host and not host.startswith("/"):  # a unix socket directory is no address
                yield "PostgreSQL", host
    yield "the API", settings.api_host
    if settings.s3_endpoint:
        yield "S3", urlsplit(settings.s3_endpoint).hostname or ""
    for name, target in settings.egress_platform_upstreams.items():
        yield f"platform upstream {name}", _host_of(target)


def _host_of(hostport: str) -> str:
    host = hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 or hostport.startswith("[") else hostport
    return host.removeprefix("[").removesuffix("]")


def resolve_now(host: str) -> list[Address]:
    """Blocking resolution (start-up only); an unresolvable name contributes nothing."""
    literal = parse_address(host)
    if literal or not host:
        return [literal] if literal else []
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as e:
        LOG.warning("cannot resolve platform service host %r: %s", host, e)
        return []
    return [ipaddress.ip_address(info[4][0]) for info in infos]
