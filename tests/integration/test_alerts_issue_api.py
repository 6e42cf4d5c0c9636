"""The issue tracker's API is called at the address that was checked, not at whatever its name
resolves to a moment later (DNS rebinding): a resolver stand-in answers a public address for the
check, and the name's next resolution would say loopback."""

import socket

import pytest

from astraforge.integrations import Integration
from astraforge.processors.alerts.issue_api import IssueApi, IssueApiFailed
from astraforge.sandbox.egress_addresses import AddressPolicy, parse_address


def _integration(url: str) -> Integration:
    return Integration(
        integration_id="int-rebind",
        tenant_id="t",
        kind="sentry",
        name=None,
        api_base_url=url,
        organization=None,
        projects={},
        agent="script",
        steps=[],
        test_command=None,
        writable_paths=[],
        rate_limit_runs=1,
        rate_limit_window_s=60,
    )


def test_a_call_connects_to_the_checked_address_whatever_the_name_resolves_to_next(egress_upstream) -> None:
    """``localhost`` resolves (on this host, for httpx) to 127.0.0.1, where a listener stands for a
    platform service. The resolver stand-in answers the upstream's public address the first time and
    loopback after that: the call used to check the first answer and then connect by name (to
    loopback). It goes to the checked address, with the name in ``Host``, after one lookup."""
    answers = [parse_address(egress_upstream.ip), parse_address("127.0.0.1")]
    lookups: list[str] = []

    def resolve(host: str) -> list:
        lookups.append(host)
        return [answers[min(len(lookups), len(answers)) - 1]]

    victim = socket.socket()
    victim.bind(("127.0.0.1", egress_upstream.port))  # free on loopback (the fixture picked it so)
    victim.listen(8)
    victim.setblocking(False)
    try:
        name = f"localhost:{egress_upstream.port}"
        api = IssueApi(_integration(f"http://{name}"), "token-1", 5.0, AddressPolicy(), [], resolve=resolve)
        try:
            with pytest.raises(IssueApiFailed, match="not JSON"):  # the upstream answers plain text
                api.comment("77", "hello")
            with pytest.raises(IssueApiFailed, match="is loopback"):  # the next call's lookup is checked too
                api.comment("77", "again")
        finally:
            api.close()
        with pytest.raises(BlockingIOError):
            victim.accept()  # nothing ever connected to loopback
    finally:
        victim.close()
    assert lookups == ["localhost", "localhost"]  # one lookup per call: none behind the check's back
    seen = [r for r in egress_upstream.requests() if "/api/0/issues/77/comments/" in r["head"]]
    assert len(seen) == 1 and f"\nhost: {name}\r".lower() in seen[0]["head"].lower()
