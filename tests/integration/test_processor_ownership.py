"""Partition ownership of the sandbox processor: a revocation that arrives while a take-over loads
leaves the partition unowned (the take-over is stale); the table's marks follow every record of
the partition, so a new owner reads only what came after them."""

import asyncio
import threading
from collections.abc import Iterator

import pytest

from astraforge.kafka import high_watermarks, reader
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.kafka import EventProducer
from tests.support import chat, wait_until

HISTORY = 3000


@pytest.fixture
def processor(fresh_settings) -> Iterator[SandboxProcessor]:
    """A processor that is not started: the test drives its rebalance hooks itself."""
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    processor = SandboxProcessor(s, make_provider(s))
    yield processor
    processor.producer.close()


def test_a_revocation_while_a_take_over_loads_never_leaves_the_partition_owned(processor) -> None:
    load = processor._load

    def load_then_revoke(partition: int):  # the barrier: the revocation lands between the load and the marking
        loaded = load(partition)
        processor._suspend_now(frozenset({partition}))
        return loaded

    processor._load = load_then_revoke
    asyncio.run(processor._assigned(frozenset({0})))
    assert processor.status.get(0) != "owned", "a stale take-over marked a revoked partition owned"

    processor._load = load  # the rebalance ends with the partition assigned again: now it is owned
    asyncio.run(processor._assigned(frozenset({0})))
    assert processor.status == {0: "owned"}


def test_the_table_mark_follows_records_that_change_no_sandbox(fresh_settings) -> None:
    """After many records that are not a sandbox's (chat here), a new owner reads none of them again."""
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    provider = make_provider(s)
    first = SandboxProcessor(s, provider)
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    owns_all = {p: "owned" for p in range(s.topic_partitions)}
    wait_until(lambda: first.status == owns_all, timeout=60, what="the first instance owns every partition")
    producer = EventProducer(s)  # after its take-over: only the marks' own movement can pass these
    for i in range(HISTORY):
        producer.send(chat(f"conversation-{i % 7}", "acme", f"message {i}"))
    producer.flush()
    consumer = reader(s)
    ends = high_watermarks(consumer, s.events_topic, s.kafka_timeout_s)
    consumer.close()
    assert sum(ends.values()) == HISTORY
    try:
        wait_until(lambda: all((first.table.data.data.get(f"@{p}") or 0) >= end for p, end in ends.items()),
                   timeout=60, what="the marks past the chat records")  # fmt: skip
    finally:
        first.stop()
        thread.join(timeout=60)

    second = SandboxProcessor(s, provider)
    thread = threading.Thread(target=second.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: second.takeovers, timeout=60, what="the second instance took over")
        (took,) = second.takeovers
        assert took["events_read"] == 0, took
        wait_until(lambda: not second.runtime.app.rebalancing, timeout=60, what="the rebalance over before the stop")
    finally:
        second.stop()
        thread.join(timeout=60)
