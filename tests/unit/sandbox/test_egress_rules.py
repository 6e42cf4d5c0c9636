"""The egress rule grammar, the label-boundary match, and the create check (no I/O)."""

import pytest

from astraforge.sandbox.egress_addresses import AddressPolicy
from astraforge.sandbox.egress_rules import check_rules, normalize_host, parse_rule


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.example.com", True),
        ("a.b.example.com", True),
        ("example.com", False),
        ("evilexample.com", False),
        ("a.evilexample.com", False),
        ("example.com.evil.org", False),
    ],
)
def test_a_wildcard_matches_subdomains_at_a_label_boundary(host: str, allowed: bool) -> None:
    assert parse_rule("*.example.com").allows(host, 443, "CONNECT") is allowed


def test_methods_and_ports_narrow_a_rule() -> None:
    rule = parse_rule("GET,post api.example.com:8443")
    assert rule.allows("api.example.com", 8443, "POST")
    assert not rule.allows("api.example.com", 8443, "PUT")
    assert not rule.allows("api.example.com", 443, "GET")
    assert parse_rule("API.Example.com.").allows("api.example.com", 1, "DELETE"), "case and a trailing dot"


def test_hosts_are_canonical() -> None:
    assert normalize_host("[::FFFF:127.0.0.1]") == "::ffff:7f00:1"
    assert normalize_host("Example.COM.") == "example.com"
    for bad in ("::1", "[1.2.3.4]", "a..b", "-a.com", "a_b.com", "", "ex*mple.com"):
        with pytest.raises(ValueError):
            normalize_host(bad)


@pytest.mark.parametrize(
    "rule",
    [
        "*",
        "*.",
        "*.com",
        "*.co.uk",
        "*.github.io",
        "10.0.0.1",
        "127.0.0.1:15432",
        "[::ffff:10.0.0.1]",
        "[fd00::1]",
        "169.254.169.254",
        "100.64.0.1",
        "localhost",
        "gateway",
        "127.1",
        "a..example.com",
        "example.com:0",
        "example.com:65536",
        "*.1.2.3.4",
        "GET  example.com",
        "GET,example.com",
        "example.com:http",
        "",
    ],
)
def test_the_create_check_refuses_and_names_the_rule(rule: str) -> None:
    with pytest.raises(ValueError, match=repr(rule).replace("*", r"\*").replace(".", r"\.").replace("[", r"\[")):
        check_rules(["example.com", rule], AddressPolicy(), {"gateway"})


def test_the_create_check_refuses_a_platform_service_address() -> None:
    import ipaddress

    policy = AddressPolicy({ipaddress.ip_address("8.8.4.4"): "PostgreSQL"})
    with pytest.raises(ValueError, match="platform service"):
        check_rules(["8.8.4.4:5432"], policy, set())


def test_ordinary_rules_pass_the_create_check() -> None:
    rules = ["api.example.com", "*.example.org:443", "GET,POST registry.npmjs.example", "[2606:4700::1111]:443"]
    assert len(check_rules(rules, AddressPolicy(), {"gateway"})) == 4


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("api.example.com", True), ("a.api.example.com", False), ("xapi.example.com", False), ("example.com", False)],
)
def test_an_exact_host_matches_only_itself(host: str, allowed: bool) -> None:
    assert parse_rule("api.example.com").allows(host, 443, "CONNECT") is allowed


@pytest.mark.parametrize("host", ["www.example.com", "deep.a.example.com"])
def test_a_wildcard_allows_deeper_subdomains(host: str) -> None:
    assert parse_rule("*.example.com").allows(host, 443, "CONNECT")


@pytest.mark.parametrize("text", ["", "   ", "GET api.example.com extra", ":443", "api.example.com:https"])
def test_a_malformed_rule_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="egress rule"):
        parse_rule(text)
