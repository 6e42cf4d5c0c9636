"""A rebalance hands a running command to the partition's new owner without interrupting it
(supervisor protocol 2: the command outlives its host's connection). Two processors in this process,
their rebalance hooks driven by the test, so the order is exact: the old owner is suspended (it stops
recording the command's output), the new one takes the partition over and re-attaches from the byte
offset the stream's records reach, and the old one learns it lost the partition (it records nothing
more). The command prints a numbered line every 50 ms until the test lets it end."""

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.processors.sandboxes.effects import ACTOR
from astraforge.processors.sandboxes.state import decide
from astraforge.producers.kafka import EventProducer
from tests.integration.test_processor_ownership import owned_ready_sandbox, records_of
from tests.integration.test_processor_restart import exec_command
from tests.support import wait_until

NUMBERED = "i=0; while [ ! -e /tmp/go ]; do i=$((i+1)); echo $i; sleep 0.05; done; echo end; touch /tmp/ended; exit 7"


@pytest.fixture
def two(fresh_settings) -> Iterator[tuple[SandboxProcessor, SandboxProcessor]]:
    """Two processors that are not started: the test drives their rebalance hooks."""
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    provider = make_provider(s)
    old, new = SandboxProcessor(s, provider), SandboxProcessor(s, provider)
    yield old, new
    for p in (old, new):
        p.stop_event.set()
        p.close()


def output_of(s, sid: str, cid: str) -> tuple[list[int], bytes]:
    """The seq numbers and the bytes of the command's ``exec.output`` records, in stream order."""
    chunks = [e.payload for e in records_of(s, sid) if e.type == "exec.output" and e.payload["command_id"] == cid]
    return [c["seq"] for c in chunks], b"".join(c["data"] for c in chunks)


def lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


def assert_every_line_once(s, sid: str, cid: str) -> None:
    seqs, data = output_of(s, sid, cid)
    assert seqs == list(range(len(seqs))), seqs
    numbers = lines(data)
    assert numbers[-1] == "end" and numbers[:-1] == [str(i) for i in range(1, len(numbers))], numbers
    finishes = [e.payload for e in records_of(s, sid) if e.type == "exec.finished"]
    assert [(f["command_id"], f["exit_code"], f["error"], f["truncated"]) for f in finishes] == [
        (cid, 7, None, False)
    ], finishes
    types = [e.type for e in records_of(s, sid)]
    assert types.count("exec.started") == 1 and types[-1] == "sandbox.ready", types


def start_numbered(old: SandboxProcessor, sid: str, cid: str) -> threading.Thread:
    run = exec_command(sid, cid, NUMBERED)
    at = EventProducer(old.settings).append(run)  # in the commands topic, where the new owner reads it
    accepted = decide(old.state(sid), run, at.offset, ACTOR)
    assert old.emit(sid, accepted.events)
    runner = threading.Thread(target=old.effects.run, args=(sid, accepted.effects[0]), daemon=True)
    runner.start()
    wait_until(lambda: len(lines(output_of(old.settings, sid, cid)[1])) >= 3, timeout=30, what="the first lines")
    return runner


def take_over(new: SandboxProcessor) -> None:
    new.runtime.lease.renew(time.monotonic(), time.time())  # as an acknowledged heartbeat does
    asyncio.run(new._assigned(frozenset({0})))
    assert new.ownership.status == {0: "owned"} and new.catch_up.wait(60)


def test_a_command_runs_on_through_a_rebalance_every_line_recorded_once(two) -> None:
    old, new = two
    s, provider = old.settings, old.provider
    sid = owned_ready_sandbox(old)
    try:
        runner = start_numbered(old, sid, "c-moves")
        old._suspend_now(frozenset({0}))  # the rebalance begins: the old owner records no more output
        at_handoff = len(lines(output_of(s, sid, "c-moves")[1]))
        take_over(new)  # reads the stream, re-attaches from the bytes recorded: the command never stopped
        wait_until(
            lambda: len(lines(output_of(s, sid, "c-moves")[1])) >= at_handoff + 5,
            timeout=30,
            what="the new owner recording the command's output",
        )
        asyncio.run(old._assigned(frozenset()))  # the old owner learns it lost partition 0
        runner.join(timeout=30)
        assert not runner.is_alive(), "the old owner still reads the command"
        provider.handle(sid).client.exec(argv=["touch", "/tmp/go"])
        wait_until(lambda: new.state(sid).state == "ready", timeout=30, what="the command's end recorded")
        assert_every_line_once(s, sid, "c-moves")
        assert not [e for e in records_of(s, sid) if e.actor != ACTOR and e.type.startswith("exec.")]
    finally:
        provider.stop(sid)


def test_a_command_that_ended_while_no_one_was_attached_is_collected_by_the_new_owner(two) -> None:
    old, new = two
    s, provider = old.settings, old.provider
    sid = owned_ready_sandbox(old)
    try:
        runner = start_numbered(old, sid, "c-ends")
        old._suspend_now(frozenset({0}))
        asyncio.run(old._assigned(frozenset()))  # the old owner let it go: nobody reads the command now
        runner.join(timeout=30)
        assert not runner.is_alive()
        client = provider.handle(sid).client
        client.exec(argv=["touch", "/tmp/go"])
        wait_until(lambda: client.exec(argv=["ls", "/tmp"]).stdout.count(b"ended"), timeout=30, what="its end")
        take_over(new)
        wait_until(lambda: new.state(sid).state == "ready", timeout=30, what="the command's end recorded")
        assert_every_line_once(s, sid, "c-ends")
    finally:
        provider.stop(sid)


def test_a_take_over_that_reloads_a_kept_partition_reads_its_own_running_command_on(two) -> None:
    """An instance dropped by its group (a missed generation) reloads every partition it gets, its own
    included (issue 7, item 2: that closed the commands it was still running as interrupted). The
    command goes on: the reader from before the reload lets it go, and a re-attach reads it on."""
    old, _ = two
    s, provider = old.settings, old.provider
    sid = owned_ready_sandbox(old)
    try:
        runner = start_numbered(old, sid, "c-kept")
        old._suspend_now(frozenset({0}))
        old._take_over(frozenset({0}), old.ownership.revocations, continued=False)
        assert old.ownership.status == {0: "owned"}
        at_reload = len(lines(output_of(s, sid, "c-kept")[1]))
        wait_until(
            lambda: len(lines(output_of(s, sid, "c-kept")[1])) >= at_reload + 5,
            timeout=30,
            what="the command's output recorded after the reload",
        )
        runner.join(timeout=30)
        assert not runner.is_alive(), "the reader from before the reload still reads the command"
        provider.handle(sid).client.exec(argv=["touch", "/tmp/go"])
        wait_until(lambda: old.state(sid).state == "ready", timeout=30, what="the command's end recorded")
        assert_every_line_once(s, sid, "c-kept")
    finally:
        provider.stop(sid)
