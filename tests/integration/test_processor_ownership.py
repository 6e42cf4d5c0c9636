"""Partition ownership of the sandbox processor: a revocation that arrives while a take-over loads
leaves the partition unowned (the take-over is stale); the table's marks follow every record of
the partition, so a new owner reads only what came after them."""

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from astraforge.kafka import high_watermarks, partition_for, read_range, reader
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.processors.sandboxes.effects import ACTOR
from astraforge.processors.sandboxes.state import Effect, decide, provisioned, requested_state
from astraforge.producers.kafka import EventProducer
from astraforge.sandbox.profile import SecurityProfile
from astraforge.sandbox.providers.base import SandboxSpec
from astraforge.schemas import default_codec
from tests.integration.test_processor_restart import exec_command
from tests.integration.test_processor_startup import create
from tests.support import chat, sandbox_ids_in, wait_until

HISTORY = 3000


@pytest.fixture
def processor(fresh_settings) -> Iterator[SandboxProcessor]:
    """A processor that is not started: the test drives its rebalance hooks itself."""
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    processor = SandboxProcessor(s, make_provider(s))
    yield processor
    processor.close()


def test_a_revocation_while_a_take_over_loads_never_leaves_the_partition_owned(processor) -> None:
    load = processor._load

    def load_then_revoke(partition: int):  # the barrier: the revocation lands between the load and the marking
        loaded = load(partition)
        processor._suspend_now(frozenset({partition}))
        return loaded

    processor._load = load_then_revoke
    asyncio.run(processor._assigned(frozenset({0})))
    assert not processor.ownership.owns(0), "a stale take-over marked a revoked partition owned"

    processor._load = load  # the rebalance ends with the partition assigned again: now it is owned
    asyncio.run(processor._assigned(frozenset({0})))
    assert processor.ownership.status == {0: "owned"}


def owned_ready_sandbox(processor: SandboxProcessor) -> str:
    """A sandbox in partition 0 with its container and the records its owner wrote (it is ready), and
    ``processor`` owning partition 0 within its lease."""
    s, provider = processor.settings, processor.provider
    (sid,) = sandbox_ids_in(s, {0})
    provider.create(SandboxSpec(sid, image=s.sandbox_image, profile=SecurityProfile()))
    decision = decide(None, create(sid), 0, ACTOR)
    ready = provisioned(requested_state(decision.events[0]), ACTOR, provider.name, {"warm_pool": "miss"})
    EventProducer(s).append_many([*decision.events, *ready])
    processor.runtime.lease.renew(time.monotonic(), time.time())  # as an acknowledged heartbeat does
    asyncio.run(processor._assigned(frozenset({0})))
    assert processor.state(sid).state == "ready" and processor.ownership.status == {0: "owned"}
    return sid


def test_a_periodic_reconcile_overtaken_by_a_rebalance_reaps_no_container_of_the_partition_it_lost(
    processor,
) -> None:
    """The periodic reconcile looks at the owned partitions, then at the provider and the states; a
    rebalance that takes a partition in between leaves its sandboxes' containers without a state
    here. They are the new owner's: none may be reaped as an orphan."""
    provider = processor.provider
    sid = owned_ready_sandbox(processor)
    try:
        clean_up = processor._clean_up

        def rebalance_then_clean_up(present, partitions):  # the barrier: partition 0 moves after the look
            processor._suspend_now(frozenset({0}))
            asyncio.run(processor._assigned(frozenset()))
            return clean_up(present, partitions)

        processor._clean_up = rebalance_then_clean_up
        processor.reconcile_owned()
        processor.lanes["control"].shutdown(wait=True)  # every reap it queued has run
        assert processor.ownership.status == {} and processor.state(sid) is None
        assert sid in provider.list_ids(), "reaped the container of a sandbox whose partition moved away"
    finally:
        provider.stop(sid)


def test_the_table_mark_follows_records_that_change_no_sandbox(fresh_settings) -> None:
    """After many records that are not a sandbox's (chat here), a new owner reads none of them again."""
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    provider = make_provider(s)
    first = SandboxProcessor(s, provider)
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    owns_all = {p: "owned" for p in range(s.topic_partitions)}
    wait_until(lambda: first.ownership.status == owns_all, timeout=60, what="the first instance owns every partition")
    producer = EventProducer(s)  # after its take-over: only the marks' own movement can pass these
    for i in range(HISTORY):
        producer.send(chat(f"conversation-{i % 7}", "acme", f"message {i}"))
    producer.flush()
    consumer = reader(s)
    ends = high_watermarks(consumer, s.events_topic, s.kafka_timeout_s)
    consumer.close()
    assert sum(ends.values()) == HISTORY
    try:
        wait_until(
            lambda: all((first.table.data.data.get(f"@{p}") or 0) >= end for p, end in ends.items()),
            timeout=60,
            what="the marks past the chat records",
        )
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


def test_a_command_still_running_after_its_partition_moved_writes_no_more_output(processor) -> None:
    """A rebalance gives a sandbox away while a command runs on it here: the new owner re-attaches to
    the command from what the stream holds, so nothing this instance still reads from it may follow."""
    s, provider = processor.settings, processor.provider
    sid = owned_ready_sandbox(processor)
    try:
        gated = "echo before; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo after"
        run = exec_command(sid, "c-moved", gated)
        accepted = decide(processor.state(sid), run, 0, ACTOR)
        assert processor.emit(sid, accepted.events)
        runner = threading.Thread(target=processor.effects.run, args=(sid, accepted.effects[0]), daemon=True)
        runner.start()
        wait_until(lambda: b"before" in b"".join(outputs(s, sid)), timeout=30, what="the command's first output")
        processor._suspend_now(frozenset({0}))  # the rebalance: partition 0 goes to another instance
        asyncio.run(processor._assigned(frozenset()))
        provider.handle(sid).client.exec(argv=["touch", "/tmp/go"])  # now the command prints again and ends
        runner.join(timeout=30)
        assert not runner.is_alive()
        processor.producer.flush()
        assert b"".join(outputs(s, sid)) == b"before\n", "output written after the partition moved away"
    finally:
        provider.stop(sid)


def outputs(s, sandbox_id: str) -> list[bytes]:
    """The ``exec.output`` data of a sandbox's stream, in order."""
    return [e.payload["data"] for e in records_of(s, sandbox_id) if e.type == "exec.output"]


def test_a_command_resumed_while_an_effect_here_runs_it_keeps_its_one_outcome(processor) -> None:
    """A take-over that reloads a partition this instance kept resumes every accepted command it finds
    pending, while this instance's own effect may still be running one: the resumption must leave it
    alone (the supervisor refuses a second start of the id, which must not become its outcome)."""
    s, provider = processor.settings, processor.provider
    sid = owned_ready_sandbox(processor)
    try:
        run = exec_command(sid, "c-once", "echo ran; while [ ! -e /tmp/go ]; do sleep 0.02; done")
        at = EventProducer(s).append(run)  # in the commands topic, where a resumption reads it
        accepted = decide(processor.state(sid), run, at.offset, ACTOR)
        assert processor.emit(sid, accepted.events)
        first = threading.Thread(target=processor.effects.run, args=(sid, accepted.effects[0]), daemon=True)
        first.start()
        wait_until(lambda: "c-once" in processor.state(sid).running, timeout=30, what="the command running")
        (pending,) = processor.state(sid).pending
        processor.effects.run(sid, Effect("resume", pending=pending))  # what the reloading take-over dispatches
        provider.handle(sid).client.exec(argv=["touch", "/tmp/go"])
        first.join(timeout=30)
        assert not first.is_alive()
        finishes = [e.payload for e in records_of(s, sid) if e.type == "exec.finished"]
        assert [(f["exit_code"], f["error"]) for f in finishes] == [(0, None)], finishes
        assert b"".join(outputs(s, sid)) == b"ran\n"
    finally:
        provider.stop(sid)


def records_of(s, sandbox_id: str) -> list:
    """A sandbox's records in the events topic, in order."""
    partition = partition_for(sandbox_id, s.topic_partitions)
    codec = default_codec()
    records = (codec.decode(m.value()) for m in read_range(s, s.events_topic, partition, 0, None))
    return [e for e in records if e.sandbox_id == sandbox_id]
