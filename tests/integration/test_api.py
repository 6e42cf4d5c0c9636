"""REST, auth and tenant scoping on the real app (uvicorn on a free port)."""

import httpx

from tests.support import auth, chat, get, wait_until


def _projected(api_url: str, key: str, stream: str, count: int) -> None:
    def done() -> bool:
        r = get(f"{api_url}/v1/streams/{stream}/events", key, limit=1000)
        return r.status_code == 200 and len(r.json()["items"]) >= count

    wait_until(done, timeout=30, what=f"{count} events of {stream} projected")


def test_health_reports_kafka_and_postgres_without_auth(api_url) -> None:
    body = httpx.get(f"{api_url}/health").json()
    assert body["status"] == "ok" and body["kafka"]["ok"] and body["postgres"]["ok"]


def test_every_v1_endpoint_requires_a_valid_key(api_url, tenant) -> None:
    for path in ["/v1/streams", "/v1/streams/x/events", "/v1/streams/x/events/sse"]:
        for headers in [{}, auth("af_0000000000000000_" + "A" * 43), auth("not-a-key"), {"Authorization": "Basic x"}]:
            r = httpx.get(f"{api_url}{path}", headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"


def test_events_page_with_after_and_limit(api_url, producer, tenant) -> None:
    name, key = tenant
    stream = f"{name}-run"
    producer.append_many([chat(stream, name, str(i)) for i in range(25)])
    _projected(api_url, key, stream, 25)
    seen, after = [], -1
    while after is not None:
        page = get(f"{api_url}/v1/streams/{stream}/events", key, after=after, limit=10).json()
        seen += page["items"]
        after = page["next_after"]
    assert [e["payload"]["text"] for e in seen] == [str(i) for i in range(25)]
    offsets = [e["offset"] for e in seen]
    assert offsets == sorted(set(offsets))
    first = seen[0]
    assert first["type"] == "chat.message" and first["actor"] == "test" and first["occurred_at"].endswith("Z")
    listed = get(f"{api_url}/v1/streams", key).json()["items"]
    assert [s["stream_id"] for s in listed] == [stream] and listed[0]["event_count"] == 25


def test_another_tenants_stream_answers_404(api_url, producer, tenant, other_tenant) -> None:
    name, key = tenant
    _, other_key = other_tenant
    stream = f"{name}-private"
    producer.append(chat(stream, name, "secret"))
    _projected(api_url, key, stream, 1)
    r = get(f"{api_url}/v1/streams/{stream}/events", other_key)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{api_url}/v1/streams/{stream}/events/sse", headers=auth(other_key)).status_code == 404
    assert get(f"{api_url}/v1/streams", other_key).json()["items"] == []
    assert get(f"{api_url}/v1/streams/no-such-stream/events", key).status_code == 404


def test_bad_parameters_are_4xx_with_a_reason(api_url, tenant) -> None:
    _, key = tenant
    r = get(f"{api_url}/v1/streams/x/events", key, limit=0)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["query", "limit"]
    r = httpx.get(f"{api_url}/v1/streams/x/events/sse", headers={**auth(key), "Last-Event-ID": "abc"})
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["error"]["message"]
    assert get(f"{api_url}/v1/nope", key).status_code == 404
