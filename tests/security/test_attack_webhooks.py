"""Attacks on the webhook intake (issue 10) by a tenant holding its own integration's secrets: every
body that is not the documented shape must be a 400, never a 5xx (a 5xx makes Sentry retry, and is
the platform failing on a caller's input). The intake needs no processor: the API alone."""

import json
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.alert_payloads import event_alert, glitchtip_alert, sentry_headers
from tests.conftest import new_tenant
from tests.runs_support import bare_repository, post
from tests.support import auth, running_api

CLIENT_SECRET = f"sentry-client-secret-{secrets.token_hex(16)}"
DEEP = b"[" * 100_000 + b"]" * 100_000  # under the 1 MiB limit, far past json's nesting


@pytest.fixture(scope="module")
def webhook_api(settings, tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("webhook-attack")
    bare_repository(root / "allowed")
    hooked = settings.model_copy(update={"repo_allowlist": {"*": [f"{root}/allowed/*.git"]}})
    with running_api(hooked, sse_ping_s=1.0) as url:
        yield url, str(root / "allowed" / "calc.git")


@pytest.fixture(scope="module")
def hooks(webhook_api, settings) -> dict[str, str]:
    """A Sentry and a GlitchTip integration's webhook URLs."""
    url, repo = webhook_api
    common = {"projects": {"calc-service": {"repository": repo}}, "steps": [{"run": "true"}]}
    made, key = {}, new_tenant(settings)[1]
    for kind, extra in (("sentry", {"client_secret": CLIENT_SECRET}), ("glitchtip", {})):
        r = post(f"{url}/v1/integrations", key, {"kind": kind, **common, **extra})
        assert r.status_code == 201, r.text
        made[kind] = url + r.json()["webhook_path"]
    return made


def with_event(change) -> bytes:
    payload = event_alert("9100")
    change(payload["data"]["event"])
    return json.dumps(payload).encode()


SENTRY_BODIES = {
    "deeply nested": DEEP,
    "frames not a list": with_event(lambda e: e["exception"]["values"][-1]["stacktrace"].update(frames=5)),
    "fingerprint not a list": with_event(lambda e: e.update(fingerprint=7)),
    "not UTF-8": b'{"data": {"event": {"issue_id": "\xff\xfe"}}}',
    "issue id an object": with_event(lambda e: e.update(issue_id={"id": 1})),
    # JSON escapes a lone surrogate (json.dumps does, of a file name surrogateescape read): no UTF-8
    # holds it, so no record could (the append was a 500); read as text, it is U+FFFD
    "a lone surrogate": with_event(lambda e: e.update(title="No such file: '/tmp/\udcff'")),
}
MUST_REFUSE = ("deeply nested", "not UTF-8", "issue id an object")
MUST_ACCEPT = ("a lone surrogate",)


@pytest.mark.parametrize("name", SENTRY_BODIES)
def test_a_signed_sentry_body_of_the_wrong_shape_is_400(hooks, name) -> None:
    body = SENTRY_BODIES[name]
    r = httpx.post(hooks["sentry"], content=body, headers=sentry_headers(CLIENT_SECRET, body, "event_alert"))
    assert r.status_code in (202, 400), (name, r.status_code, r.text)  # a shape we can read, or a clear refusal
    if name in MUST_REFUSE:
        assert r.status_code == 400
    if name in MUST_ACCEPT:
        assert r.status_code == 202


def glitchtip_with(change) -> bytes:
    payload = glitchtip_alert("https://glitchtip.example", ["42"])
    change(payload["attachments"][0])
    return json.dumps(payload).encode()


GLITCHTIP_BODIES = {
    "deeply nested": DEEP,
    "fields not a list": glitchtip_with(lambda a: a.update(fields=3)),
    "a lone surrogate": glitchtip_with(lambda a: a.update(title="\udfff")),
    "a lone surrogate in a key": glitchtip_with(lambda a: a.update(fields=[{"title": "\ud800x", "value": 1}])),
}


@pytest.mark.parametrize("name", GLITCHTIP_BODIES)
def test_a_glitchtip_body_of_the_wrong_shape_is_400(hooks, name) -> None:
    r = httpx.post(hooks["glitchtip"], content=GLITCHTIP_BODIES[name], headers={"Content-Type": "application/json"})
    assert r.status_code in (202, 400), (name, r.status_code, r.text)
    if name == "deeply nested":
        assert r.status_code == 400
    if "surrogate" in name:
        assert r.status_code == 202


@pytest.mark.parametrize("url", ["http://[::1", "http://tracker.example:99999", "http://u:p@tracker.example"])
def test_an_integration_api_url_it_cannot_call_is_422(webhook_api, settings, url) -> None:
    """``http://[::1`` and a port out of range passed the pattern, then raised ValueError in the
    alerts processor at every enrichment and comment; credentials belong in ``api_token``."""
    api, repo = webhook_api
    body = {"kind": "glitchtip", "projects": {"p": {"repository": repo}}, "steps": [{"run": "true"}]}
    r = post(f"{api}/v1/integrations", new_tenant(settings)[1], {**body, "api_base_url": url})
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("query", ["text=a%00b", "repository=%00"])
def test_a_run_filter_with_nul_is_422(webhook_api, settings, projector, query) -> None:
    """PostgreSQL text holds no NUL: the list query raised DataError, a 500."""
    api, _ = webhook_api
    r = httpx.get(f"{api}/v1/runs?{query}", headers=auth(new_tenant(settings)[1]))
    assert r.status_code == 422, r.text
