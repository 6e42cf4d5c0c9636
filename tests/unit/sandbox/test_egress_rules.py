"""The allowlist rule matcher's boundaries: a wildcard covers subdomains only (never a name that
merely ends with the same letters, nor the bare domain), a port or a method list narrows a rule.

Written against ``Rule.parse(...).allows(host, port, method)`` only, so it holds whatever the proxy
around it becomes; the proxy's own behaviour is tested end to end in tests/integration/test_egress.py.
"""

import pytest

from astraforge.sandbox.egress import Rule


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.example.com", True),
        ("www.example.com", True),
        ("deep.a.example.com", True),
        ("example.com", False),  # the wildcard is for subdomains, not the domain itself
        ("evilexample.com", False),  # same suffix without the dot: another registrant's name
        ("a.evilexample.com", False),
        ("example.com.evil.net", False),
        ("aexample.com", False),
    ],
)
def test_wildcard_matches_whole_labels_only(host: str, allowed: bool) -> None:
    assert Rule.parse("*.example.com").allows(host, 443, "CONNECT") is allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("api.example.com", True), ("a.api.example.com", False), ("xapi.example.com", False), ("example.com", False)],
)
def test_an_exact_host_matches_only_itself(host: str, allowed: bool) -> None:
    assert Rule.parse("api.example.com").allows(host, 443, "CONNECT") is allowed


def test_a_port_narrows_the_rule() -> None:
    rule = Rule.parse("api.example.com:8443")
    assert rule.allows("api.example.com", 8443, "CONNECT")
    assert not rule.allows("api.example.com", 443, "CONNECT")


def test_methods_narrow_the_rule_and_a_bare_rule_allows_every_method() -> None:
    rule = Rule.parse("GET,head api.example.com")
    assert rule.allows("api.example.com", 80, "GET") and rule.allows("api.example.com", 80, "HEAD")
    assert not rule.allows("api.example.com", 80, "POST")
    assert not rule.allows("api.example.com", 80, "CONNECT")
    assert Rule.parse("api.example.com").allows("api.example.com", 80, "DELETE")


@pytest.mark.parametrize("text", ["", "   ", "GET api.example.com extra", ":443", "api.example.com:https"])
def test_a_malformed_rule_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="egress rule"):
        Rule.parse(text)
