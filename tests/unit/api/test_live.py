"""The live tail's fan-out: one frame per record for every SSE subscriber of its stream, decoded
records for the others, and nothing for a subscriber of another tenant (no broker needed: the
messages are built here and handed to the dispatcher as a poll would)."""

import asyncio

from confluent_kafka import Message

from astraforge.api.live import LiveFrame, LiveTail
from astraforge.config import Settings
from astraforge.kafka import Positioned
from astraforge.schemas import Envelope, default_codec


def chat(stream: str, tenant: str, text: str) -> bytes:
    payload = {"message_id": text, "role": "agent", "text": text}
    return default_codec().encode(Envelope(type="chat.message", stream_id=stream, tenant_id=tenant, actor="a",
                                           payload=payload))  # fmt: skip


def test_one_frame_per_record_reaches_every_sse_subscriber_of_its_tenant_only() -> None:
    async def scenario() -> dict[str, list]:
        tail = LiveTail(Settings(topic_prefix="unit-live"))
        tail.ready.set()
        tail.positions = {0: 10}
        subs = {
            "sse-1": tail.subscribe("s", "acme", frames=True),
            "sse-2": tail.subscribe("s", "acme", frames=True),
            "records": tail.subscribe("s", "acme"),
            "other-tenant": tail.subscribe("s", "globex", frames=True),
            "other-stream": tail.subscribe("t", "acme", frames=True),
        }
        values = [chat("s", "acme", "a"), chat("s", "globex", "b"), b"not avro", chat("s", "acme", "c\x00nul")]
        tail._dispatch(
            [Message(topic="x", partition=0, offset=10 + i, key=b"s", value=v) for i, v in enumerate(values)]
        )
        await asyncio.sleep(0)  # the offers scheduled with call_soon_threadsafe
        return {name: sub.drain(100) for name, sub in subs.items()}

    got = asyncio.run(scenario())
    assert [f.offset for f in got["sse-1"]] == [10, 13] and all(isinstance(f, LiveFrame) for f in got["sse-1"])
    assert all(a is b for a, b in zip(got["sse-1"], got["sse-2"], strict=True))  # built once, shared
    assert '"text":"a"' in got["sse-1"][0].text and '"base64"' in got["sse-1"][1].text  # NUL: the full path
    assert [(r.offset, r.envelope.tenant_id) for r in got["records"]] == [(10, "acme"), (13, "acme")]
    assert all(isinstance(r, Positioned) for r in got["records"])
    assert [f.offset for f in got["other-tenant"]] == [11] and got["other-stream"] == []


def test_a_record_that_cannot_be_framed_is_skipped_and_the_rest_of_the_poll_still_arrives() -> None:
    """A record timed past year 9999 (µs written as ns) decodes but has no frame: SSE subscribers
    skip it (the projector dead-letters it), the command service still gets it, and the records
    after it in the same poll reach everyone (the tail's positions are already past them all)."""
    poison = default_codec().encode(Envelope(type="chat.message", stream_id="s", tenant_id="acme", actor="a",
                                             payload={"message_id": "m", "role": "agent", "text": "ns"},
                                             occurred_at=1_700_000_000_000_000_000))  # fmt: skip

    async def scenario() -> tuple[list, list]:
        tail = LiveTail(Settings(topic_prefix="unit-live"))
        tail.ready.set()
        tail.positions = {0: 0}
        sse, records = tail.subscribe("s", "acme", frames=True), tail.subscribe("s", "acme")
        values = [chat("s", "acme", "before"), poison, chat("s", "acme", "after")]
        tail._dispatch([Message(topic="x", partition=0, offset=i, key=b"s", value=v) for i, v in enumerate(values)])
        await asyncio.sleep(0)
        return sse.drain(10), records.drain(10)

    frames, records = asyncio.run(scenario())
    assert [f.offset for f in frames] == [0, 2]
    assert [r.offset for r in records] == [0, 1, 2]
