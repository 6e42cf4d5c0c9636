"""The broker's half of the fence: the events topic refuses a record stamped under a lease that has
ended (``message.timestamp.before.max.ms``), whenever it arrives; the producer goes on after such a
refusal; ``ensure_topics`` gives an events topic made before fencing its window; a processor refuses
to start on an events topic without one."""

import secrets
import time

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic

from astraforge.errors import ConfigError, DeliveryFailed
from astraforge.kafka import read_range
from astraforge.processors.runtime import fence_window_ms
from astraforge.producers.kafka import EventProducer
from astraforge.producers.topics import FENCE, FENCE_WINDOW_MS, admin_client, ensure_topics
from tests.conftest import make_settings
from tests.support import chat


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_record_stamped_under_an_ended_lease_is_refused_by_the_broker(settings) -> None:
    producer = EventProducer(settings)
    stream = f"conversation-{secrets.token_hex(8)}"
    ended_5s_ago = now_ms() - 5_000 - FENCE_WINDOW_MS  # Runtime.stamp: the lease's end minus the window
    with pytest.raises(DeliveryFailed, match=r"(?i)timestamp"):
        producer.append_many([chat(stream, "acme", "from a stalled instance")], timestamp=ended_5s_ago)
    ends_in_5s = now_ms() + 5_000 - FENCE_WINDOW_MS
    (kept,) = producer.append_many([chat(stream, "acme", "within the lease")], timestamp=ends_in_5s)
    texts = [m.value() for m in read_range(settings, settings.events_topic, kept.partition, 0, kept.offset + 1)]
    assert any(b"within the lease" in t for t in texts) and not any(b"from a stalled instance" in t for t in texts)
    assert producer.append_many([chat(stream, "acme", "and goes on")])[0].offset > kept.offset


def test_ensure_topics_fences_an_events_topic_made_before_fencing_and_processors_need_it() -> None:
    s = make_settings()
    admin = admin_client(s)
    admin.create_topics([NewTopic(s.events_topic, s.topic_partitions, 1)])[s.events_topic].result()
    try:
        with pytest.raises(ConfigError, match="accepts records of any age"):
            fence_window_ms(s)
        ensure_topics(s)
        assert fence_window_ms(s) == FENCE_WINDOW_MS
        resource = ConfigResource(ConfigResource.Type.TOPIC, s.events_topic)
        assert admin.describe_configs([resource])[resource].result()[FENCE].value == str(FENCE_WINDOW_MS)
    finally:
        admin.delete_topics([s.events_topic, s.commands_topic, s.deadletter_topic])
