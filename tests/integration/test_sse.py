"""SSE: replay + live, exactly once and in order across reconnects while a writer is producing."""

import json
import threading
import time

import httpx
from httpx_sse import connect_sse

from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope
from tests.support import auth, chat, wait_until

TOTAL = 10_000


def _writer(settings, stream: str, tenant: str, started: threading.Event) -> None:
    producer = EventProducer(settings)
    for start in range(0, TOTAL, 100):
        producer.append_many([chat(stream, tenant, str(n)) for n in range(start, start + 100)])
        if start >= 1000:
            started.set()
        time.sleep(0.01)
    producer.close()


def test_reconnecting_client_gets_every_event_exactly_once_in_order(settings, api_url, tenant) -> None:
    name, key = tenant
    stream = f"{name}-sse"
    started = threading.Event()
    writer = threading.Thread(target=_writer, args=(settings, stream, name, started))
    writer.start()
    assert started.wait(60)  # connect mid-stream: >= 1000 events already written
    received: list[tuple[int, str]] = []
    last_id: str | None = None
    connections = 0
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=httpx.Timeout(30, read=30)) as client:
        while len(received) < TOTAL and time.monotonic() < deadline:
            connections += 1
            headers = auth(key) | ({"Last-Event-ID": last_id} if last_id else {})
            drop_after = 1500 if connections < 5 else None  # drop the first four connections part-way
            with connect_sse(client, "GET", f"{api_url}/v1/streams/{stream}/events/sse", headers=headers) as source:
                assert source.response.status_code == 200
                for event in source.iter_sse():
                    if not event.data:  # a ping comment (httpx-sse reports it as an empty event)
                        assert time.monotonic() < deadline, f"stalled after {len(received)} events: a gap"
                        continue
                    received.append((int(event.id), event.json()["payload"]["text"]))
                    last_id = event.id
                    if len(received) == TOTAL or (drop_after and len(received) >= drop_after * connections):
                        break
    writer.join()
    assert connections >= 5
    offsets = [o for o, _ in received]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), "no duplicate, in order"
    assert [t for _, t in received] == [str(n) for n in range(TOTAL)], "no gap"


def test_a_client_following_live_sees_new_events_and_pings(settings, api_url, producer, tenant) -> None:
    name, key = tenant
    stream = f"{name}-live"
    producer.append(chat(stream, name, "first"))
    got: list[str] = []
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=30)) as client,
        client.stream("GET", f"{api_url}/v1/streams/{stream}/events/sse", headers=auth(key)) as response,
    ):
        lines = response.iter_lines()
        pinged = False
        for line in lines:
            if line.startswith(":"):
                pinged = True
            if line.startswith("data:"):
                got.append(line)
                if len(got) == 1:
                    producer.append(chat(stream, name, "second"))
            if len(got) == 2 and pinged:
                break
    assert [json.loads(line.removeprefix("data:"))["payload"]["text"] for line in got] == ["first", "second"]


def test_records_not_yet_projected_are_served_from_kafka(fresh_settings) -> None:
    """With no projector running at all, SSE still delivers every record (gap fill from Kafka, then live)."""
    from astraforge.db import connect
    from astraforge.keys import create_key
    from astraforge.projections.postgres import create_schema
    from tests.support import running_api

    with connect(fresh_settings) as conn:
        create_schema(conn, fresh_settings.projection_schema)
    tenant = "gap-tenant"
    key = create_key(fresh_settings, tenant)
    producer = EventProducer(fresh_settings)
    producer.append_many([chat("gap", tenant, str(n)) for n in range(500)])
    producer.append(chat("gap", "intruder", "not yours"))  # same stream id, another tenant: never shown
    texts: list[str] = []
    with (
        running_api(fresh_settings) as url,
        httpx.Client(timeout=httpx.Timeout(30, read=30)) as client,
        connect_sse(client, "GET", f"{url}/v1/streams/gap/events/sse", headers=auth(key)) as source,
    ):
        for event in source.iter_sse():
            if not event.data:
                continue
            texts.append(event.json()["payload"]["text"])
            if len(texts) == 500:
                producer.append_many([chat("gap", tenant, str(n)) for n in range(500, 510)])
            if len(texts) == 510:
                break
    assert texts == [str(n) for n in range(510)]


def test_the_live_handover_never_resends_a_replayed_record(settings, producer, projector, tenant) -> None:
    """Records the live tail delivered while the projection replay also had them are sent once: the
    subscriber is made first, its queue holds every record, and the replay holds them too (both
    awaited before the response starts), so only the handover's offset filter stands between the
    client and twenty duplicates."""
    import asyncio

    from astraforge.api.main import create_app
    from astraforge.api.routes.streams import _sse

    name, _ = tenant
    stream = f"{name}-handover"

    async def scenario() -> list[int]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            live = app.state.live
            sub = live.subscribe(stream, name, frames=True)  # as the route subscribes
            producer.append_many([chat(stream, name, str(n)) for n in range(20)])
            while sub.queue.qsize() < 20:  # the live tail delivered all twenty
                await asyncio.sleep(0.02)
            wait_until(lambda: _projected(settings, stream) == 20, timeout=30, what="projection")
            sent: list[int] = []
            events = _sse(sub, live, app.state.pool, settings, name, stream, -1)
            async for chunk in events:  # several frames to a chunk
                sent.extend(int(line[4:]) for line in chunk.decode().splitlines() if line.startswith("id: "))
                if len(sent) == 20:
                    producer.append(chat(stream, name, "after"))
                if len(sent) >= 21:
                    break
            await events.aclose()
            return sent

    sent = asyncio.run(scenario())
    assert len(sent) == 21 and len(set(sent)) == 21 and sent == sorted(sent), sent


def _projected(settings, stream: str) -> int:
    from psycopg import sql

    from astraforge.db import connect

    with connect(settings) as conn:
        query = sql.SQL("SELECT count(*) AS n FROM {}.events WHERE stream_id = %s")
        return conn.execute(query.format(sql.Identifier(settings.projection_schema)), (stream,)).fetchone()["n"]


def test_replayed_frames_carry_what_rest_serves(settings, api_url, producer, tenant) -> None:
    """Replay frames are built by PostgreSQL: each one's data is the REST item of the same record."""
    name, key = tenant
    stream = f"{name}-frames"
    texts = [
        "plain",
        'quote " backslash \\ newline \n tab \t',
        "é 漢字 \U0001f600",
        "\x01 control",
    ]  # no U+2028: httpx splits lines there, SSE does not
    records = [chat(stream, name, text) for text in texts]
    records.append(Envelope(type="exec.output", stream_id=stream, tenant_id=name, actor="agent\n1", sandbox_id="sb-1",
                            causation_id="cause", payload={"command_id": "c", "stream": "stderr", "seq": 2**60,
                                                           "data": b"\xffbinary\x00", "artifact": None}))  # fmt: skip
    producer.append_many(records)
    with httpx.Client(base_url=api_url, headers=auth(key), timeout=30) as client:
        wait_until(lambda: len(client.get(f"/v1/streams/{stream}/events").json().get("items", [])) == 5, what="rows")
        rest = client.get(f"/v1/streams/{stream}/events").json()["items"]
        frames: list[tuple[str, str, str]] = []
        with client.stream("GET", f"/v1/streams/{stream}/events/sse") as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("id: "):
                    frames.append((line, next(lines), next(lines)))
                if len(frames) == 5:
                    break
    assert [f[0] for f in frames] == [f"id: {item['offset']}" for item in rest]
    assert [f[1] for f in frames] == [f"event: {item['type']}" for item in rest]
    data = [json.loads(f[2].removeprefix("data: ")) for f in frames]
    assert data == rest
    assert [list(d) for d in data] == [list(item) for item in rest]  # same keys, same order
