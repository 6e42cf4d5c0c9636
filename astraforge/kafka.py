"""Shared confluent-kafka client settings: one place for bootstrap, timeouts and logging.

librdkafka's own log lines go to the ``astraforge.kafka`` Python logger instead of stderr, so an
unreachable broker is reported once by our code (as ``KafkaUnavailable``), not as a flood.
"""

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from astraforge.config import Settings
from astraforge.errors import KafkaUnavailable

LOG = logging.getLogger("astraforge.kafka")


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "socket.timeout.ms": 3000,
        "reconnect.backoff.max.ms": 2000,
        "logger": LOG,
        **extra,
    }


def reader(settings: Settings, **extra: Any) -> Consumer:
    """A consumer for manual assignment (no group management, no committed offsets)."""
    return Consumer(
        client_config(
            settings,
            **{
                "group.id": "astraforge-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                **extra,
            },
        )
    )


def partitions_of(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """Partition ids of a topic; raises ``KafkaUnavailable`` when Kafka does not answer."""
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as e:
        raise KafkaUnavailable(f"Kafka did not answer: {e}") from e
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        raise KafkaUnavailable(f"topic {topic} is missing (run `astraforge dev up`)")
    return sorted(info.partitions)


def high_watermarks(consumer: Consumer, topic: str, timeout: float) -> dict[int, int]:
    """The next offset to be written, per partition."""
    marks = {}
    for partition in partitions_of(consumer, topic, timeout):
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        except KafkaException as e:
            raise KafkaUnavailable(f"Kafka did not answer: {e}") from e
        marks[partition] = high
    return marks
