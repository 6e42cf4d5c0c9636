"""How the sandbox processor's partition loop treats a command it cannot finish: a dead letter is
acknowledged before the command counts as consumed (and waits for nothing else), a transient
failure is retried (never skipped), a poison command is set aside with its reason, and the loop
goes on in both cases."""

import secrets
import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from astraforge.kafka import read_range
from astraforge.processors.runtime import Source
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.kafka import EventProducer
from tests.integration.test_processor_restart import command, exec_command, records, seen
from tests.integration.test_processor_startup import create
from tests.support import wait_until


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
        processor._handle_one(Source(settings.commands_topic, 0, 4242, b"k"), garbage)  # as its partition's owner
        # handled: the cursor may move past it now, so the dead letter is already in the topic
        (letter,) = [m for m in dead_letters(settings) if m.value() == garbage]
        assert headers(letter)["source.offset"] == "4242" and headers(letter)["reason"]
        assert len(processor.producer._producer) >= 1, "the backlog was not waited for"
    finally:
        processor.close()


class FailingAppends:
    """Fault injection on the real producer: ``append_many`` raises ``error`` for the records of one
    stream, ``times`` times (None: always), then sends them as usual."""

    def __init__(self, producer: EventProducer, stream_id: str, error: Exception, times: int | None) -> None:
        self.real, self.stream_id, self.error, self.left = producer.append_many, stream_id, error, times
        self.raised = 0
        producer.append_many = self

    def __call__(self, envelopes, **options):
        envelopes = list(envelopes)
        if any(e.stream_id == self.stream_id for e in envelopes) and (self.left is None or self.left > 0):
            self.raised += 1
            if self.left is not None:
                self.left -= 1
            raise self.error
        return self.real(envelopes, **options)


def test_a_transient_failure_is_retried_and_the_command_is_not_skipped(running_processor) -> None:
    processor = running_processor
    s = processor.settings
    sid, later = (f"sb-{secrets.token_hex(16)}" for _ in range(2))
    transport = KafkaException(KafkaError(KafkaError._TRANSPORT, "broker connection lost"))
    failing = FailingAppends(processor.producer, sid, transport, times=3)
    EventProducer(s).append_many([create(sid), create(later)])
    wait_until(lambda: seen(s, sid, "sandbox.ready"), timeout=90, what=f"{sid} created after the retries")
    wait_until(lambda: seen(s, later, "sandbox.ready"), timeout=90, what="the next command handled: the loop lives")
    assert failing.raised == 3
    assert [e.type for e in records(s, sid)].count("sandbox.requested") == 1
    assert not [m for m in dead_letters(s) if m.key() == sid.encode()], "a transient failure is not poison"


def test_an_exec_got_ready_before_its_accept_failed_runs_once_when_it_is_accepted_and_lets_go_of_the_rest(
    running_processor,
) -> None:
    """An exec a ready sandbox starts at once is handed to its thread before its accept is appended,
    and gets ready meanwhile (the lease guard counts its actor, a connection to the supervisor is
    opened). Here the accept's append fails twice: each of those attempts is let go (its actor no
    longer counted, its connection closed) and the command runs once, from the attempt that was
    acknowledged."""
    processor = running_processor
    s = processor.settings
    sid, cid = f"sb-{secrets.token_hex(16)}", f"cmd-{secrets.token_hex(8)}"
    producer = EventProducer(s)
    try:
        producer.append(create(sid))
        wait_until(lambda: seen(s, sid, "sandbox.ready"), timeout=90, what=f"{sid} ready")
        transport = KafkaException(KafkaError(KafkaError._TRANSPORT, "broker connection lost"))
        failing = FailingAppends(processor.producer, sid, transport, times=2)  # the exec's accept, twice
        producer.append(exec_command(sid, cid, "echo ran >> /workspace/runs; cat /workspace/runs"))
        wait_until(lambda: seen(s, sid, "exec.finished", command_id=cid), timeout=60, what="the exec finished")
        assert failing.raised == 2
        mine = [e for e in records(s, sid) if e.payload.get("command_id") == cid]
        assert [e.type for e in mine] == ["exec.accepted", "exec.started", "exec.output", "exec.finished"]
        (done,) = [e for e in mine if e.type == "exec.finished"]
        assert done.payload["exit_code"] == 0 and done.payload["error"] is None, done.payload
        (output,) = [e for e in mine if e.type == "exec.output"]
        assert output.payload["data"] == b"ran\n", "run more than once"
        wait_until(lambda: sid not in processor.effects.guard._active, timeout=10, what="every attempt let go")
    finally:
        producer.close()


def test_a_poison_command_is_dead_lettered_with_its_reason_and_the_loop_goes_on(running_processor) -> None:
    processor = running_processor
    s = processor.settings
    sid, later = (f"sb-{secrets.token_hex(16)}" for _ in range(2))
    FailingAppends(processor.producer, sid, RuntimeError("this command breaks the processor"), times=None)
    EventProducer(s).append_many([create(sid), command(later, "sandbox.heartbeat", {"reason": None}), create(later)])

    def letter():
        return [m for m in dead_letters(s) if m.key() == sid.encode()]

    wait_until(letter, timeout=60, what="the poison command dead-lettered")
    assert headers(letter()[0])["reason"] == "RuntimeError: this command breaks the processor"
    wait_until(lambda: seen(s, later, "sandbox.ready"), timeout=90, what="the next command handled: the loop lives")
    assert not records(s, sid)


def test_the_processor_refuses_topics_that_are_not_co_partitioned(docker_provider) -> None:
    from confluent_kafka.admin import NewTopic

    from astraforge.errors import ConfigError
    from astraforge.producers.topics import admin_client
    from tests.conftest import make_settings

    s = make_settings(topic_partitions=3)
    admin = admin_client(s)
    wrong = {s.commands_topic: 3, s.events_topic: 2, s.deadletter_topic: 3}  # created by hand with another count
    for future in admin.create_topics([NewTopic(t, n, 1) for t, n in wrong.items()]).values():
        future.result()
    try:
        processor = SandboxProcessor(s, docker_provider)
        with pytest.raises(ConfigError, match=rf"topic {s.events_topic} has 2 partitions but .* is 3"):
            processor.run()
        assert not processor.runtime.owned and not processor.ownership.status
    finally:
        admin.delete_topics(list(wrong))


def test_a_command_redelivered_long_after_it_was_handled_is_not_run_again(fresh_settings) -> None:
    """The sandbox's own memory of commands ends with it (``ended_grace_s`` after its end; 256 ids while
    it lives), but the same record can come again later (a commit lost in a crash, a reset of the
    group's offsets): here the old ``sandbox.create`` record is handed to a new instance again."""
    from astraforge.kafka import partition_for
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    provider = make_provider(s)
    producer = EventProducer(s)
    sid = f"sb-{secrets.token_hex(16)}"
    first = SandboxProcessor(s, provider, ended_grace_s=0)
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    try:
        producer.append(create(sid))
        wait_until(lambda: seen(s, sid, "sandbox.ready"), timeout=90, what=f"{sid} ready")
        producer.append(command(sid, "sandbox.stop", {"reason": "done"}))
        wait_until(
            lambda: seen(s, sid, "sandbox.terminated") and first.state(sid) is None,
            timeout=60,
            what=f"{sid} ended and forgotten",
        )
        wait_until(lambda: not first.runtime.app.rebalancing, timeout=60, what="the rebalance over before the stop")
    finally:
        first.stop()
        thread.join(timeout=60)

    partition = partition_for(sid, s.topic_partitions)
    (old,) = [
        m
        for m in read_range(s, s.commands_topic, partition, 0, None)
        if m.key() == sid.encode() and producer.codec.decode(m.value()).type == "sandbox.create"
    ]
    second = SandboxProcessor(s, provider)
    thread = threading.Thread(target=second.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: second.ownership.owns(partition), timeout=60, what="the second instance owns it")
        second.handle(Source(s.commands_topic, partition, old.offset(), old.key()), old.value())  # delivered again
        assert [e.type for e in records(s, sid)].count("sandbox.requested") == 1, "the ended sandbox came back"
        assert second.state(sid) is None and sid not in provider.list_ids()
        wait_until(lambda: not second.runtime.app.rebalancing, timeout=60, what="the rebalance over before the stop")
    finally:
        second.stop()
        thread.join(timeout=60)
        for running in provider.list_ids():
            provider.stop(running)
