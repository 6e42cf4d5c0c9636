"""The read side at scale: short Kafka reads reuse consumers, and nothing blocks the event loop."""

import pytest

from astraforge.api.live import LiveTail
from astraforge.errors import KafkaUnavailable
from astraforge.kafka import ReaderPool, partition_for, read_range
from tests.support import chat


def test_gap_fill_reads_borrow_and_return_pooled_consumers(settings, producer) -> None:
    producer.append_many([chat("pooled", "acme", str(n)) for n in range(5)])
    partition = partition_for("pooled", settings.topic_partitions)
    pool = ReaderPool(settings, keep=2)
    try:
        seen = []
        for _ in range(3):  # one consumer serves every sequential read
            seen.append([m.value() for m in read_range(settings, settings.events_topic, partition, 0, None, pool=pool)])
            assert pool.idle == 1
        assert seen[0] == seen[1] == seen[2] and len(seen[0]) >= 5
        with pool.borrow() as a, pool.borrow() as b:  # concurrent reads get consumers of their own
            assert a is not b
        assert pool.idle == 2
        abandoned = read_range(settings, settings.events_topic, partition, 0, None, pool=pool)
        next(abandoned)
        abandoned.close()  # a read stopped half-way is closed, never handed out in an unknown state
        assert pool.idle == 1
    finally:
        pool.close()


def test_subscribe_never_waits_for_a_tail_that_is_not_connected(settings) -> None:
    tail = LiveTail(settings)  # never started
    tail.ready.wait = None  # it used to block the event loop on this wait (2 x kafka_timeout_s): now never called
    with pytest.raises(KafkaUnavailable):
        tail.subscribe("s", "acme")
    assert not tail.healthy()
