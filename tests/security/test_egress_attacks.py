"""Attacks on the egress proxy, made from inside a sandbox through the public API (exec endpoint),
with the sandbox processor running.

The agent's tool is tests/security/scripts/egress_probe.py, uploaded into the sandbox: it speaks to
the proxy byte by byte. Allowed traffic goes to an upstream in a network namespace this session
created (tests/netns.py); nothing here leaves the machine.

Some sandboxes carry rules the API now refuses (``127.0.0.1:15432``...). They are created by
appending the records directly, as a sandbox recorded before this check existed is replayed: the
proxy must refuse those targets whatever the rules say.
"""

import base64
import json
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import httpx
import pytest

from astraforge.schemas import Envelope
from tests.conftest import GATEWAY_PORT, gateway_listener
from tests.integration.test_sandbox_api import create, post
from tests.support import auth, wait_until

PROBE = Path(__file__).with_name("scripts") / "egress_probe.py"
AUTH = "@AUTH@"  # the probe puts this exec's Proxy-Authorization here (attribution)


# -- helpers -----------------------------------------------------------------------------------
def recorded_sandbox(api_url, producer, tenant, key, rules: list[str], grants: list[str] | None = None) -> str:
    """A sandbox created by appending its records (as a pre-existing one is replayed, or as the
    platform creates one with a grant), bypassing the API's rule check."""
    sid = f"sb-{secrets.token_hex(16)}"
    image = "astraforge/sandbox:bookworm"
    details = {"idle_timeout_s": "600", "ttl_s": "600", "egress_allow": "\n".join(rules)}
    payload = {"image": image, "profile": {}, "cpus": None, "memory_mb": None, "pids": None, "idle_timeout_s": 600,
               "ttl_s": 600, "egress_allow": rules, "restore_snapshot": None}  # fmt: skip
    if grants is not None:
        details["platform_upstreams"] = "\n".join(grants)
        payload["platform_upstreams"] = grants
    common = {"stream_id": sid, "tenant_id": tenant, "sandbox_id": sid}
    producer.append_many([
        Envelope(type="sandbox.requested", actor=f"tenant:{tenant}", **common,
                 payload={"state": "requested", "reason": None, "provider": None, "image": image, "details": details}),
        Envelope(type="sandbox.create", actor="processor:runs" if grants else f"tenant:{tenant}", **common,
                 payload=payload),
    ])  # fmt: skip
    wait_until(lambda: _state(api_url, key, sid) == "ready", timeout=90, what=f"{sid} ready")
    return sid


def _state(api_url, key, sid) -> str | None:
    r = httpx.get(f"{api_url}/v1/sandboxes/{sid}", headers=auth(key))
    return r.json()["state"] if r.status_code == 200 else None


def probe(api_url, key, sid, *args: str) -> dict:
    """Run the probe inside the sandbox (uploaded on first use) and answer its JSON line."""
    base = f"{api_url}/v1/sandboxes/{sid}"
    if httpx.get(f"{base}/files/egress_probe.py", headers=auth(key)).status_code != 200:
        r = httpx.put(f"{base}/files/egress_probe.py", headers=auth(key), content=PROBE.read_bytes())
        assert r.status_code == 200, r.text
    result = post(f"{base}/exec", key, {"command": ["python", "egress_probe.py", *args], "timeout_sec": 120}).json()
    assert result["exit_code"] == 0, result
    return json.loads(result["stdout"])


def raw(text: str) -> str:
    """Request bytes for the probe (base64 keeps CR, LF and the rest exactly as written)."""
    return base64.b64encode(text.encode("latin-1")).decode()


def get(target: str, path: str) -> str:
    """An absolute-URI GET whose Host agrees with its target, attributed to the exec."""
    return raw(f"GET http://{target}{path} HTTP/1.1\r\nHost: {target}\r\n{AUTH}\r\n")


def connect(target: str) -> str:
    return raw(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{AUTH}\r\n")


def statuses(result: dict) -> list[int]:
    return [r["status"] for r in result.get("responses", [])]


def egress_events(api_url, key, sid) -> list[dict]:
    items = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000}).json()["items"]
    return [e for e in items if e["type"].startswith("egress.")]


def wait_events(api_url, key, sid, count: int) -> list[dict]:
    wait_until(lambda: len(egress_events(api_url, key, sid)) >= count, timeout=30, what=f"{count} egress records")
    return egress_events(api_url, key, sid)


def stop(api_url, key, sid) -> None:
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


# -- the host's own services -------------------------------------------------------------------
def test_connect_to_the_platforms_own_services_is_refused(
    api_url, sandbox_processor, producer, tenant, egress_upstream
) -> None:
    tenant_id, key = tenant
    api_port = urlsplit(api_url).port
    targets = {
        "127.0.0.1:15432": "loopback",  # PostgreSQL
        "127.0.0.1:19092": "loopback",  # Kafka
        f"127.0.0.1:{api_port}": "loopback",  # this API
        "localhost:15432": "loopback",  # a name that resolves to loopback
        "127.1:15432": "loopback",  # a numeric shorthand the resolver expands
        "[::ffff:127.0.0.1]:15432": "loopback",  # IPv4-mapped IPv6
        "[::1]:15432": "loopback",
        "0.0.0.0:15432": "unspecified",
        "10.0.0.1:5432": "private",
        "169.254.169.254:80": "link-local",  # cloud metadata
        "100.64.0.1:80": "shared address space",
        f"{egress_upstream.host_end}:15432": "address of this host",  # global, but this machine's own
    }
    sid = recorded_sandbox(api_url, producer, tenant_id, key, list(targets))
    for target, reason in targets.items():
        result = probe(api_url, key, sid, "send", connect(target))
        assert statuses(result) == [403], (target, result)
        assert reason in result["responses"][0]["body"], (target, result)
    events = wait_events(api_url, key, sid, len(targets))
    assert [e["type"] for e in events] == ["egress.denied"] * len(targets)
    for event, reason in zip(events, targets.values(), strict=True):
        assert reason in event["payload"]["reason"], event
        assert event["payload"]["command_id"], "attributed to the exec that tried"
    stop(api_url, key, sid)


# -- rules refused at create ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "rule",
    ["*", "*.", "*.com", "GET *.com", "*.co.uk", "10.0.0.1", "127.0.0.1:15432", "[::ffff:127.0.0.1]:443", "localhost",
     "0.0.0.0", "a..example.com", "example.com:0", "example.com:70000", "*.*.example.com", "ex*mple.com",
     "model-gateway", f"127.0.0.1:{GATEWAY_PORT}", "GET\nexample.com"],
)  # fmt: skip
def test_create_refuses_dangerous_rules(api_url, tenant, rule: str) -> None:
    _, key = tenant
    r = post(f"{api_url}/v1/sandboxes", key, {"egress_allow": ["example.com", rule]})
    assert r.status_code == 422, (rule, r.text)
    assert repr(rule) in r.json()["error"]["message"], r.text


def test_a_tenant_cannot_grant_itself_a_platform_upstream(api_url, tenant) -> None:
    _, key = tenant
    r = post(f"{api_url}/v1/sandboxes", key, {"platform_upstreams": ["model-gateway"]})
    assert r.status_code == 422, r.text


# -- DNS: resolved once, the checked address is the one connected to ---------------------------
class HostileDNS:
    """Stands in for a DNS server the attacker controls (offline there is no other): each name
    answers the given addresses in turn, one answer per lookup. Other names resolve as usual.
    It replaces ``socket.getaddrinfo``, which the proxy calls (in an executor) to resolve."""

    def __init__(self, monkeypatch, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: dict[str, int] = dict.fromkeys(answers, 0)
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return self.real(host, port, *args, **kwargs)
        address = self.answers[name][self.lookups[name] % len(self.answers[name])]
        self.lookups[name] += 1
        return self.real(address, port, *args, **kwargs)


class LoopbackListener:
    """A listener on the host's 127.0.0.1 that counts who reached it (nobody should)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def test_dns_rebinding_connects_only_to_the_checked_address(
    api_url, sandbox_processor, tenant, egress_upstream, monkeypatch
) -> None:
    _, key = tenant
    up = egress_upstream
    name = f"rebind-{secrets.token_hex(4)}.example"
    dns = HostileDNS(monkeypatch, {name: [up.ip, "127.0.0.1"]})  # public first, then the host itself
    trap = LoopbackListener(up.port)  # same port on the host's loopback: where a re-resolved connect lands
    try:
        sid = create(api_url, key, egress_allow=[f"GET {name}:{up.port}"])["id"]
        answers = []
        for n in range(4):
            answers.append(probe(api_url, key, sid, "send", get(f"{name}:{up.port}", f"/r{n}")))
        assert [statuses(a) for a in answers] == [[200], [403], [200], [403]], answers
        assert "127.0.0.1 is loopback" in answers[1]["responses"][0]["body"]
        assert trap.accepted == 0, "the proxy connected to the host's loopback"
        assert dns.lookups[name] == 4, "one lookup per request: the address checked is the address used"
        seen = [r for r in up.requests() if f"Host: {name}" in r["head"]]
        assert [(r["head"].split()[1], r["local"]) for r in seen] == [("/r0", up.ip), ("/r2", up.ip)]
        events = wait_events(api_url, key, sid, 4)
        assert [e["type"] for e in events] == ["egress.allowed", "egress.denied"] * 2
        assert events[0]["payload"]["address"] == up.ip and events[1]["payload"]["address"] == "127.0.0.1"
        stop(api_url, key, sid)
    finally:
        trap.sock.close()


def test_subdomain_rules_respect_the_label_boundary(
    api_url, sandbox_processor, tenant, egress_upstream, monkeypatch
) -> None:
    _, key = tenant
    up = egress_upstream
    zone = f"z{secrets.token_hex(4)}.example"
    names = {"api." + zone: 200, "evil" + zone: 403, zone: 403, f"x.evil{zone}": 403}
    HostileDNS(monkeypatch, {name: [up.ip] for name in names})
    sid = create(api_url, key, egress_allow=[f"*.{zone}:{up.port}"])["id"]
    for name, status in names.items():
        result = probe(api_url, key, sid, "send", get(f"{name}:{up.port}", "/"))
        assert statuses(result) == [status], (name, result)
    stop(api_url, key, sid)


# -- every request on a kept-alive connection is checked (item 12) -----------------------------
@pytest.fixture
def get_only(api_url, sandbox_processor, tenant, egress_upstream):
    _, key = tenant
    sid = create(api_url, key, egress_allow=[f"GET {egress_upstream.ip}:{egress_upstream.port}"])["id"]
    yield key, sid, egress_upstream
    stop(api_url, key, sid)


def test_host_header_must_agree_with_the_checked_target(api_url, get_only) -> None:
    key, sid, up = get_only
    target = f"{up.ip}:{up.port}"
    request = f"GET http://{target}/h HTTP/1.1\r\nHost: evil.example\r\n{AUTH}\r\n"
    result = probe(api_url, key, sid, "send", raw(request))
    assert statuses(result) == [400], result
    assert not [r for r in up.requests() if "evil.example" in r["head"]], "the mismatched Host reached the upstream"
    (event,) = wait_events(api_url, key, sid, 1)
    assert event["type"] == "egress.denied" and "Host" in event["payload"]["reason"]


def test_an_endless_stream_of_interim_answers_is_cut_off(api_url, get_only) -> None:
    """An allowed but hostile upstream sends 103s forever: the proxy relays a few, then answers 502
    (each was drained first, so a sandbox that never reads cannot make the proxy buffer them)."""
    key, sid, up = get_only
    target = f"{up.ip}:{up.port}"
    result = probe(api_url, key, sid, "send", raw(f"GET http://{target}/flood-interim HTTP/1.1\r\n"
                                                  f"Host: {target}\r\n{AUTH}\r\n"))  # fmt: skip
    seen = json.dumps(result)  # the probe reads 1xx answers and the final one as one stream
    assert "502 Bad Gateway" in seen and "more than 8 interim responses" in seen, result
    assert seen.count("103 Early Hints") <= 8


def test_pipelined_post_under_a_get_only_rule_is_refused(api_url, get_only) -> None:
    key, sid, up = get_only
    target = f"{up.ip}:{up.port}"
    marker = secrets.token_hex(4)
    pipelined = (f"GET http://{target}/first-{marker} HTTP/1.1\r\nHost: {target}\r\n{AUTH}\r\n"
                 f"POST http://{target}/second-{marker} HTTP/1.1\r\nHost: {target}\r\nContent-Length: 5\r\n{AUTH}\r\n"
                 "stole")  # fmt: skip
    result = probe(api_url, key, sid, "send", raw(pipelined), "2")
    assert statuses(result) == [200, 403], result
    paths = [r["head"].split()[1] for r in up.requests() if marker in r["head"]]
    assert paths == [f"/first-{marker}"], "only the GET reached the upstream"
    events = wait_events(api_url, key, sid, 2)
    assert [(e["type"], e["payload"]["method"]) for e in events] == [
        ("egress.allowed", "GET"),
        ("egress.denied", "POST"),
    ]


def test_each_request_on_a_kept_alive_connection_is_forwarded_by_its_framing_and_recorded(
    api_url, sandbox_processor, tenant, egress_upstream
) -> None:
    _, key = tenant
    up = egress_upstream
    target = f"{up.ip}:{up.port}"
    sid = create(api_url, key, egress_allow=[f"GET,POST {target}"])["id"]
    marker = secrets.token_hex(4)
    three = (f"POST http://{target}/chunked-{marker} HTTP/1.1\r\nHost: {target}\r\nTransfer-Encoding: chunked\r\n"
             f"{AUTH}\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
             f"POST http://{target}/sized-{marker} HTTP/1.1\r\nHost: {target}\r\nContent-Length: 3\r\n{AUTH}\r\nabc"
             f"GET http://{target}/after-{marker} HTTP/1.1\r\nHost: {target}\r\n{AUTH}\r\n")  # fmt: skip
    result = probe(api_url, key, sid, "send", raw(three), "3")
    assert statuses(result) == [200, 200, 200], result
    seen = [(r["head"].split()[1], r["body"]) for r in up.requests() if marker in r["head"]]
    assert seen == [(f"/chunked-{marker}", "hello world"), (f"/sized-{marker}", "abc"), (f"/after-{marker}", "")]
    events = wait_events(api_url, key, sid, 3)
    assert [(e["type"], e["payload"]["url"].rsplit("/", 1)[1]) for e in events] == [
        ("egress.allowed", f"chunked-{marker}"), ("egress.allowed", f"sized-{marker}"),
        ("egress.allowed", f"after-{marker}")]  # fmt: skip
    stop(api_url, key, sid)


def test_a_connection_header_cannot_strip_the_framing(api_url, get_only) -> None:
    """``Connection: content-length`` asks a proxy to drop that header; if it did, the body would
    reach the upstream as a second request that no rule checked."""
    key, sid, up = get_only
    target = f"{up.ip}:{up.port}"
    marker = secrets.token_hex(4)
    smuggled = f"POST /smuggled-{marker} HTTP/1.1\r\nHost: {target}\r\nContent-Length: 0\r\n\r\n"
    request = (f"GET http://{target}/carrier-{marker} HTTP/1.1\r\nHost: {target}\r\nConnection: content-length\r\n"
               f"Content-Length: {len(smuggled)}\r\n{AUTH}\r\n{smuggled}")  # fmt: skip
    assert statuses(probe(api_url, key, sid, "send", raw(request))) == [200]
    seen = [r for r in up.requests() if marker in r["head"] + r["body"]]
    assert [r["head"].split()[1] for r in seen] == [f"/carrier-{marker}"], seen
    assert seen[0]["body"] == smuggled, "the body stayed a body"


@pytest.mark.parametrize(
    "headers",
    [
        "X-A: 1\nInjected: yes\r\n",  # a bare LF inside the head
        "X-A: 1\r\n folded: yes\r\n",  # obs-fold
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        "Content-Length: 3\r\nContent-Length: 3\r\n",
        "Content-Length: abc\r\n",
        "Content-Length: -1\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Bad Header: x\r\n",
    ],
    ids=["bare-lf", "obs-fold", "cl-and-te", "duplicate-cl", "invalid-cl", "negative-cl", "te-not-chunked", "bad-name"],
)
def test_malformed_framing_is_refused(api_url, get_only, headers: str) -> None:
    key, sid, up = get_only
    target = f"{up.ip}:{up.port}"
    marker = secrets.token_hex(4)
    request = f"GET http://{target}/{marker} HTTP/1.1\r\nHost: {target}\r\n{headers}{AUTH}\r\nabc"
    result = probe(api_url, key, sid, "send", raw(request))
    assert statuses(result) == [400], result
    assert not [r for r in up.requests() if marker in r["head"]], "a malformed request reached the upstream"
    (event,) = wait_events(api_url, key, sid, 1)
    assert event["type"] == "egress.denied" and "malformed" in event["payload"]["reason"], event


# -- denial of service (item 8) -----------------------------------------------------------------
def test_a_request_head_that_never_ends_is_cut_off(api_url, get_only) -> None:
    key, sid, up = get_only
    head = f"GET http://{up.ip}:{up.port}/slow HTTP/1.1\r\nHost: {up.ip}:{up.port}\r\nX-Slow: "
    result = probe(api_url, key, sid, "slow", raw(head))
    assert result["closed"], "the proxy kept a connection whose head never ended"
    assert result["data"] == "" or result["data"].startswith("HTTP/1.1 408"), result
    (event,) = wait_events(api_url, key, sid, 1)
    assert event["type"] == "egress.denied" and "not complete within" in event["payload"]["reason"], event


def test_the_per_sandbox_connection_cap_holds(api_url, sandbox_processor, settings, tenant, egress_upstream) -> None:
    _, key = tenant
    target = f"{egress_upstream.ip}:{egress_upstream.port}"
    sid = create(api_url, key, egress_allow=[target])["id"]
    cap = settings.egress_max_connections
    result = probe(api_url, key, sid, "hold", str(cap), connect(target))
    assert result["held"] == [200] * cap, result
    assert statuses(result["extra"]) == [429], result
    events = wait_events(api_url, key, sid, cap + 1)
    assert [e["type"] for e in events].count("egress.denied") == 1
    stop(api_url, key, sid)


def test_denied_attempts_are_recorded_at_a_bounded_rate(api_url, sandbox_processor, settings, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key, egress_allow=["allowed.example"])["id"]
    attempts = settings.egress_denials_recorded + 15
    result = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": ["python", "-c", (
        "import socket\n"
        f"for _ in range({attempts}):\n"
        "    with socket.create_connection(('127.0.0.1', 3128)) as s:\n"
        "        s.sendall(b'CONNECT denied.example:443 HTTP/1.1\\r\\nHost: denied.example:443\\r\\n\\r\\n')\n"
        "        assert s.recv(100).startswith(b'HTTP/1.1 403')\n")]}).json()  # fmt: skip
    assert result["exit_code"] == 0, result

    def accounted() -> int:
        return sum(e["payload"].get("suppressed") or 1 for e in egress_events(api_url, key, sid))

    wait_until(lambda: accounted() >= attempts, timeout=60, what="every denial accounted for")
    events = egress_events(api_url, key, sid)
    summaries = [e for e in events if e["payload"].get("suppressed")]
    assert summaries, "denials beyond the limit are summarised"
    assert len(events) - len(summaries) <= settings.egress_denials_recorded * len(summaries)
    assert accounted() == attempts
    assert "more denied attempts suppressed" in summaries[0]["payload"]["reason"]
    stop(api_url, key, sid)


# -- platform upstreams (the model gateway) ----------------------------------------------------
class Gateway(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Gateway.seen.append(self.path)
        body = b"gateway"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def gateway():
    server = ThreadingHTTPServer(("127.0.0.1", GATEWAY_PORT), Gateway, bind_and_activate=False)
    server.socket.close()
    server.socket = gateway_listener()  # bound since the session began
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Gateway.seen
    server.shutdown()
    server.server_close()


def test_a_platform_upstream_is_reached_only_through_a_platform_grant(
    api_url, sandbox_processor, producer, tenant, gateway
) -> None:
    tenant_id, key = tenant
    granted = recorded_sandbox(api_url, producer, tenant_id, key, [], grants=["model-gateway"])
    marker = secrets.token_hex(4)
    result = probe(api_url, key, granted, "send", get("model-gateway", f"/v1/models-{marker}"))
    assert statuses(result) == [200] and result["responses"][0]["body"] == "gateway", result
    assert f"/v1/models-{marker}" in gateway

    # a tenant naming it, or its address, gets nowhere, even with the rules written into its records
    tenant_rules = ["model-gateway", f"127.0.0.1:{GATEWAY_PORT}"]
    ungranted = recorded_sandbox(api_url, producer, tenant_id, key, tenant_rules)
    for target in ("model-gateway:80", f"127.0.0.1:{GATEWAY_PORT}"):
        assert statuses(probe(api_url, key, ungranted, "send", get(target, f"/v1/stolen-{marker}"))) == [403], target
    assert f"/v1/stolen-{marker}" not in gateway
    events = wait_events(api_url, key, ungranted, 2)
    assert "not granted" in events[0]["payload"]["reason"] and "loopback" in events[1]["payload"]["reason"]
    for sid in (granted, ungranted):
        stop(api_url, key, sid)
