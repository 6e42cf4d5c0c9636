"""How the sandbox processor's partition loop treats a command it cannot finish: a dead letter is
acknowledged before the command counts as consumed (and waits for nothing else)."""

import secrets

from astraforge.kafka import read_range
from astraforge.processors.runtime import Source
from astraforge.processors.sandboxes import SandboxProcessor


def dead_letters(settings) -> list:
    """Every record of the dead-letter topic, as confluent-kafka messages."""
    topic = settings.deadletter_topic
    return [m for p in range(settings.topic_partitions) for m in read_range(settings, topic, p, 0, None)]


def headers(msg) -> dict[str, str]:
    return {k: v.decode() for k, v in msg.headers() or []}


def test_a_dead_letter_waits_for_its_own_delivery_not_the_producers_queue(settings, docker_provider) -> None:
    processor = SandboxProcessor(settings, docker_provider)
    try:
        # another thread's backlog: a record for a topic that does not exist stays queued until its
        # message timeout (10 s); a global flush() waited for it (and raised if it outlived the flush)
        processor.producer.send_raw(f"{settings.topic_prefix}.no-such-topic", b"k", b"backlog")
        garbage = b"not a record " + secrets.token_hex(8).encode()
        processor.handle(Source(settings.commands_topic, 0, 4242, b"k"), garbage)
        # handle has returned (faust may commit the offset now): the dead letter is already in the topic
        (letter,) = [m for m in dead_letters(settings) if m.value() == garbage]
        assert headers(letter)["source.offset"] == "4242" and headers(letter)["reason"]
        assert len(processor.producer._producer) >= 1, "the backlog was not waited for"
    finally:
        processor.producer.close()
