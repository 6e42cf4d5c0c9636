"""Egress allowlist rules: the grammar the proxy matches, and the stricter check a tenant's rules
pass at create.

Grammar (``parse_rule``; the proxy also parses rules recorded before the create check existed):

    [METHODS ]HOST[:PORT]     e.g. "api.example.com", "*.example.com", "GET,POST api.example.com:8443"
    METHODS   comma-separated upper-case tokens (none: every method; CONNECT is the HTTPS tunnel)
    HOST      a DNS name (labels of letters, digits and inner hyphens), or ``*.`` and a DNS name: any
              subdomain at a label boundary (``*.example.com`` matches ``a.example.com``, never
              ``example.com`` itself nor ``evilexample.com``), or an IP literal (IPv6 in brackets)
    PORT      1..65535 (none: any port)

Create check (``check_rules``), on top of the grammar: rules that would reach everything or the
platform are refused: ``*``; ``*.`` followed by a public suffix, that is any single label
(``*.com``) or one of a small built-in list of multi-label suffixes where anyone can register a
name (``*.co.uk``, ``*.github.io``; it is not the whole Public Suffix List, so a rarer suffix
passes here, and the proxy's address policy still applies to whatever it resolves to);
single-label names (``localhost``, ``model-gateway``: they resolve through the host's own files and
search domains); names whose last label is numeric (``127.1``, which resolvers read as an IPv4
address); IP literals the address policy refuses; and the operator's platform upstream names and
addresses, which only a platform grant reaches.
"""

import re
from dataclasses import dataclass

from astraforge.sandbox.egress_addresses import AddressPolicy, parse_address

METHODS = r"(?:(?P<methods>[A-Za-z]+(?:,[A-Za-z]+)*) )?"
RULE = re.compile(rf"^{METHODS}(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+)(?::(?P<port>\d+))?$")
LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
COUNTRY_SECOND_LEVELS = """co.uk org.uk me.uk ltd.uk plc.uk net.uk ac.uk gov.uk com.au net.au org.au co.nz org.nz
    co.jp ne.jp or.jp com.br net.br com.cn net.cn org.cn co.in net.in org.in co.za org.za com.mx com.ar com.tr co.kr
    com.tw com.hk com.sg co.id com.my com.ph com.vn co.il com.ua com.pl com.ru"""
OPEN_HOSTING = """github.io githubusercontent.com gitlab.io herokuapp.com appspot.com cloudfront.net amazonaws.com
    azurewebsites.net blob.core.windows.net web.app firebaseapp.com vercel.app netlify.app pages.dev workers.dev
    ngrok.io ngrok-free.app fly.dev onrender.com repl.co glitch.me"""  # anyone gets a subdomain here
MULTI_LABEL_PUBLIC_SUFFIXES = frozenset((COUNTRY_SECOND_LEVELS + " " + OPEN_HOSTING).split())


def normalize_host(text: str) -> str:
    """A request's or rule's host in canonical form: IP literals as ``ipaddress`` writes them, DNS
    names lower-cased without a trailing dot. Raises ValueError for anything else."""
    ip = parse_address(text)
    if ip is not None:
        if text.startswith("[") != (ip.version == 6):
            raise ValueError("IPv6 literals go in brackets, IPv4 literals do not")
        return str(ip)
    name = text.lower().removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(LABEL.match(label) for label in labels):
        raise ValueError(f"{text!r} is not a host name (letters, digits and inner hyphens per label, no empty label)")
    return name


@dataclass(frozen=True)
class Rule:
    """One allowlist entry. ``host`` is canonical; ``wildcard`` rules match strict subdomains."""

    host: str
    port: int | None
    methods: frozenset[str] | None
    wildcard: bool = False

    def allows(self, host: str, port: int, method: str) -> bool:
        """``host`` must be canonical (``normalize_host``)."""
        host_ok = host.endswith("." + self.host) if self.wildcard else host == self.host
        return host_ok and self.port in (None, port) and (self.methods is None or method in self.methods)


def parse_rule(text: str) -> Rule:
    """The grammar only (see the module docstring); ValueError names the rule."""
    match = RULE.match(text)
    if not match:
        raise ValueError(f"egress rule {text!r}: expected '[METHODS ]host[:port]'")
    methods = frozenset(m.upper() for m in match["methods"].split(",")) if match["methods"] else None
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"egress rule {text!r}: port {port} is not in 1..65535")
    host = match["host"]
    if host in ("*", "*."):
        raise ValueError(f"egress rule {text!r}: would allow every host")
    wildcard = host.startswith("*.")
    try:
        host = normalize_host(host[2:] if wildcard else host)
    except ValueError as e:
        raise ValueError(f"egress rule {text!r}: {e}") from None
    if wildcard and parse_address(host):
        raise ValueError(f"egress rule {text!r}: a wildcard needs a domain, not an address")
    return Rule(host, port, methods, wildcard)


def parse_rules(rules: list[str]) -> list[Rule]:
    return [parse_rule(r) for r in rules]


def check_rules(rules: list[str], policy: AddressPolicy, platform_names: set[str]) -> list[Rule]:
    """The create check (module docstring): the parsed rules, or a ValueError naming the rule."""
    parsed = []
    for text in rules:
        rule = parse_rule(text)
        why = _too_broad(rule, policy, platform_names)
        if why:
            raise ValueError(f"egress rule {text!r}: {why}")
        parsed.append(rule)
    return parsed


def _too_broad(rule: Rule, policy: AddressPolicy, platform_names: set[str]) -> str | None:
    ip = parse_address(rule.host)
    if ip is not None:
        return policy.refusal(ip)
    if rule.host in platform_names:
        return f"{rule.host!r} is a platform upstream: only the platform grants it"
    labels = rule.host.split(".")
    if rule.wildcard and (len(labels) == 1 or rule.host in MULTI_LABEL_PUBLIC_SUFFIXES):
        return f"'*.{rule.host}' covers a whole public suffix"
    if len(labels) == 1:
        return f"single-label name {rule.host!r} resolves through this host's own names, not public DNS"
    if labels[-1].isdigit():
        return f"{rule.host!r} reads as a numeric address, not a name"
    return None
