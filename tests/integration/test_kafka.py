"""The producer and topics on the real broker."""

import asyncio
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka.admin import ConfigResource

from astraforge.errors import KafkaUnavailable, ValidationError
from astraforge.kafka import partition_for, read_range
from astraforge.producers import kafka as producer_module
from astraforge.producers.kafka import EventProducer
from astraforge.producers.topics import admin_client, ensure_topics
from astraforge.schemas import default_codec
from tests.conftest import make_settings
from tests.support import chat, free_port


def test_topics_carry_the_audit_log_configs(settings) -> None:
    admin = admin_client(settings)
    resources = [ConfigResource("topic", t) for t in (settings.events_topic, settings.deadletter_topic)]
    for future in admin.describe_configs(resources).values():
        configs = future.result()
        assert configs["retention.ms"].value == "-1"
        assert configs["cleanup.policy"].value == "delete"
        assert configs["compression.type"].value == "zstd"
    assert ensure_topics(settings) == []  # idempotent


def test_each_stream_is_totally_ordered_in_its_own_partition(settings, producer: EventProducer) -> None:
    streams = [f"order-{i}" for i in range(20)]
    envelopes = [chat(s, "acme", f"{n}") for n in range(50) for s in streams]  # interleaved
    appended = producer.append_many(envelopes)
    by_stream: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for envelope, where in zip(envelopes, appended, strict=True):
        by_stream[envelope.stream_id].append((where.partition, where.offset))
    codec = default_codec()
    for stream, positions in by_stream.items():
        partitions = {p for p, _ in positions}
        assert partitions == {partition_for(stream, settings.topic_partitions)}
        offsets = [o for _, o in positions]
        assert offsets == sorted(offsets)
        (partition,) = partitions
        texts = [
            codec.decode(m.value()).payload["text"]
            for m in read_range(settings, settings.events_topic, partition, offsets[0], offsets[-1] + 1)
            if m.key() == stream.encode()
        ]
        assert texts == [str(n) for n in range(50)]


def test_a_batch_with_a_record_that_cannot_be_encoded_appends_none_of_it(settings, producer: EventProducer) -> None:
    """Records were encoded as they were sent: the ones before a record that cannot be encoded (here a
    lone surrogate) went out, and the caller, told the append failed, had half of it appended (the
    alerts processor: its decision recorded, the run it started lost). Every record is encoded first."""
    stream = "whole-batch"
    partition = partition_for(stream, settings.topic_partitions)
    codec = default_codec()
    for append in (producer.append_many, lambda records: asyncio.run(producer.append_async(records))):
        before = producer.append(chat(stream, "acme", "before"))
        with pytest.raises(ValidationError):
            append([chat(stream, "acme", "good"), chat(stream, "acme", "bad \ud800")])
        after = producer.append(chat(stream, "acme", "after"))  # acknowledged: whatever was sent before is in
        texts = [
            codec.decode(m.value()).payload["text"]
            for m in read_range(settings, settings.events_topic, partition, before.offset, after.offset + 1)
            if m.key() == stream.encode()
        ]
        assert texts == ["before", "after"]


def test_a_caller_whose_report_another_thread_served_returns_without_waiting_for_more(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent callers share one producer (the API's request threads, the processor's effects).
    A poll serves whichever reports are in, so one caller's poll often serves another's report;
    the other must return then, not when its own poll next sees an event (with nothing else in
    flight: never, until its poll times out)."""
    monkeypatch.setattr(producer_module, "POLL_S", 60.0)  # a missed wake-up shows as a hang, not as jitter
    producer = EventProducer(settings)
    done: list[int] = []

    def append_some(n: int) -> None:
        for i in range(5):
            producer.append(chat(f"concurrent-{n}", "acme", f"{i}"))
        done.append(n)

    threads = [threading.Thread(target=append_some, args=(n,), daemon=True) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    producer.close()
    assert sorted(done) == list(range(8))


def test_unreachable_kafka_is_a_clear_error_within_seconds() -> None:
    dead = make_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="did not answer"):
        EventProducer(dead)
    with pytest.raises(KafkaUnavailable):
        ensure_topics(dead)
    assert time.monotonic() - started < 15


def test_append_many_waits_only_for_its_own_records(settings) -> None:
    """Another caller's backlog (here: a record for a topic that does not exist, which librdkafka
    holds for a minute) must neither fail nor hold an append whose own records were acknowledged:
    a global ``flush()`` waited for the whole queue and raised ``DeliveryFailed`` at its timeout."""
    quick = settings.model_copy(update={"kafka_timeout_s": 1.0})
    producer = EventProducer(quick, **{"message.timeout.ms": 60_000})
    producer.send_raw(f"{settings.topic_prefix}.no-such-topic", b"k", b"backlog")
    appended = producer.append_many([chat("own-records", "acme", "mine")])
    assert appended[0].topic == settings.events_topic and appended[0].offset >= 0
