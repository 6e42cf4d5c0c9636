"""Payload shapes from the notes -> AlertReceived records; Sentry's signature; secrets kept out of logs."""

import logging

import pytest

from astraforge.api.routes.webhooks import RedactWebhookSecrets
from astraforge.integrations import signature_matches
from astraforge.producers.alert_payloads import MalformedAlert, glitchtip, rest_event, sentry
from astraforge.producers.webhooks import RefusalBudget
from astraforge.schemas import Envelope, default_codec
from tests.alert_payloads import (
    body_bytes,
    event_alert,
    glitchtip_alert,
    installation,
    issue_created,
    rest_latest_event,
    sign,
)

SECRET = "b2d5c1f0e7a94e35a1c0f6d3b8e2a7c4"


def test_the_signature_is_hmac_sha256_of_the_raw_bytes() -> None:
    body = body_bytes(event_alert("7"))
    assert signature_matches(SECRET, body, sign(SECRET, body))
    assert not signature_matches(SECRET, body + b" ", sign(SECRET, body))  # re-serialised bytes differ
    assert not signature_matches(SECRET, body, sign("another-secret-of-the-same-size", body))
    assert not signature_matches(SECRET, body, None)
    assert not signature_matches(SECRET, body, "sha256=" + sign(SECRET, body))  # Sentry sends no prefix


def test_an_event_alert_carries_its_stack_trace() -> None:
    a = sentry("event_alert", event_alert("7"), "req-1")
    assert (a["alert_id"], a["project"], a["project_id"], a["actionable"]) == ("7", "calc-service", "4504", True)
    assert (a["exception_type"], a["exception_value"]) == ("AssertionError", "add(2, 3) returned -1")
    assert (a["release"], a["environment"], a["culprit"]) == ("calc@1.4.2", "production", "calc in add")
    assert a["web_url"].startswith("https://sentry.io/organizations/acme/issues/7/")
    assert [(f["filename"], f["lineno"], f["in_app"]) for f in a["frames"]][-1] == ("calc.py", 2, True)
    record = Envelope(type="alert.receive", stream_id="int-1", tenant_id="t", actor="x", payload=a)
    codec = default_codec()
    assert codec.decode(codec.encode(record)).payload["frames"] == a["frames"]  # a valid AlertReceived


def test_an_issue_alert_has_no_frames_and_the_rest_event_supplies_them() -> None:
    a = sentry("issue", issue_created("8"), None)
    assert (a["alert_id"], a["project"], a["frames"], a["actionable"]) == ("8", "calc-service", [], True)
    found = rest_event(rest_latest_event("8"))
    assert [(f["filename"], f["lineno"], f["context_line"]) for f in found["frames"]][-1] == (
        "calc.py",
        2,
        "    return a - b",
    )
    assert (found["release"], found["environment"]) == ("calc@1.4.3", "staging")
    resolved = sentry("issue", {**issue_created("8"), "action": "resolved"}, None)
    assert resolved["actionable"] is False


def test_installation_and_unknown_resources_are_recorded_only() -> None:
    assert sentry("installation", installation(), None)["actionable"] is False
    assert sentry("metric_alert", {"action": "critical", "data": {}}, None)["actionable"] is False


def test_a_glitchtip_alert_names_its_issues_in_title_links() -> None:
    alerts = glitchtip(glitchtip_alert("https://glitch.example", ["31", "32"]))
    assert [(a["alert_id"], a["project"], a["release"], a["actionable"]) for a in alerts] == [
        ("31", "Calc service", "calc@1.4.2", True),
        ("32", "Calc service", "calc@1.4.2", True),
    ]
    uptime = {"text": "GlitchTip Uptime Alert", "attachments": [{"title": "site", "title_link": "https://x/"}]}
    assert glitchtip(uptime)[0]["actionable"] is False


@pytest.mark.parametrize(
    "resource, body",
    [
        ("event_alert", []),
        ("event_alert", {"data": {}}),
        ("event_alert", {"data": {"event": {"title": "no issue id"}}}),
        ("issue", {"data": {"issue": "x"}}),
        ("issue", {"data": []}),
    ],
)
def test_malformed_sentry_bodies_are_refused(resource, body) -> None:
    with pytest.raises(MalformedAlert):
        sentry(resource, body, None)


@pytest.mark.parametrize(
    "body", [{}, {"text": "x"}, {"text": "x", "attachments": []}, {"text": "x", "attachments": [1]}]
)
def test_malformed_glitchtip_bodies_are_refused(body) -> None:
    with pytest.raises(MalformedAlert):
        glitchtip(body)


def test_the_access_log_never_shows_a_glitchtip_path_secret() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", "/v1/webhooks/glitchtip/s3cr3t-Value_x", "1.1", 202),
        None,
    )
    RedactWebhookSecrets().filter(record)
    assert "s3cr3t" not in record.getMessage() and "/v1/webhooks/glitchtip/<secret>" in record.getMessage()


def test_refusals_are_recorded_one_by_one_up_to_a_budget_per_stream() -> None:
    budget = RefusalBudget(per_stream=3, window_s=3600)
    assert [budget.admit("int-a", "1.2.3.4") for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.admit("int-b", "1.2.3.4") == 0  # another stream has its own budget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_refusals_adds_a_bounded_number_of_records_and_counts_the_rest() -> None:
    """Refusals were budgeted per stream only, and the windows' table was cleared whenever it held
    10,000 streams: a flood rotating integration ids (or one integration from many addresses) was
    recorded without bound. Now per stream, per address and overall, with the table bounded; what
    is not recorded is counted, and each stream's next record says how many of its own it missed."""
    clock = Clock()
    budget = RefusalBudget(per_stream=20, per_remote=50, overall=200, window_s=10.0, max_keys=1000, clock=clock)
    streams = ["webhooks-refused", *[f"int-{i}" for i in range(30)]]
    recorded: dict[str, int] = {}
    carried: dict[str, int] = {}
    windows, per_window = 5, 20_000
    for w in range(windows):
        admitted = 0
        for i in range(per_window):  # every refusal from its own address (IPv6 makes that cheap)
            stream = streams[i % len(streams)]
            unrecorded = budget.admit(stream, f"2001:db8::{w}:{i}")
            if unrecorded is not None:
                admitted += 1
                recorded[stream] = recorded.get(stream, 0) + 1
                carried[stream] = carried.get(stream, 0) + unrecorded
        assert admitted <= 200  # the overall budget, whatever the addresses and ids
        assert len(budget._windows) <= 1000
        clock.now += 10.0
    total = windows * per_window
    assert sum(recorded.values()) <= 200 * windows
    assert budget.dropped == total - sum(recorded.values())
    # every dropped refusal is either carried on a later record of its stream or still pending
    assert sum(carried.values()) + sum(budget._unrecorded.values()) == budget.dropped

    one = RefusalBudget(per_stream=20, per_remote=5, overall=200, window_s=10.0, clock=clock)
    flood = [one.admit(f"int-{i}", "203.0.113.9") for i in range(100)]  # one address, many integrations
    assert sum(n is not None for n in flood) == 5
