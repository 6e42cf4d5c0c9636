"""Bad input on the conversation and lease routes: a clear 4xx naming the fault, never a 5xx or a
silent 2xx (no processor runs here: nothing may reach one)."""

import httpx
import pytest

from tests.support import auth

BAD_CREATES = [
    {"model": "m", "tools": ["execute", "rm_rf"]},  # a tool deepagents does not have
    {"model": "m", "tools": "execute"},
    {"model": "m\x00"},
    {"model": "m", "system_prompt": "a\x00b"},
    {"model": "m", "max_tokens": "many"},
    {"model": "m", "unknown": 1},
    {"model": "m", "sandbox_id": "sb-does-not-exist"},
    {"model": "m", "temperature": 3},
]


@pytest.mark.parametrize("body", BAD_CREATES, ids=range(len(BAD_CREATES)))
def test_a_bad_conversation_is_refused_with_a_4xx(api_url, tenant, body) -> None:
    _, key = tenant
    r = httpx.post(f"{api_url}/v1/conversations", json=body, headers=auth(key), timeout=30)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


def test_bad_messages_and_cancels_are_4xx(api_url, tenant) -> None:
    _, key = tenant
    base = f"{api_url}/v1/conversations/cv-nope"
    for body in ({"text": ""}, {"text": "a\x00"}, {"text": 1}, {"text": "x", "role": "system"}, {}):
        r = httpx.post(f"{base}/messages", json=body, headers=auth(key), timeout=30)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    r = httpx.post(f"{base}/cancel", content=b"{not json", headers={**auth(key), "content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
