"""No accepted command is lost, or closed while it runs well, across a rebalance.

Faust commits past records it never handed to the processor: after a revocation dropped the
records it had buffered, a partition this instance kept resumed past them, and faust counted the
skipped offsets as acknowledged (tests/scale/test_faust_commit.py pins that defect). The processor
therefore keeps its own cursor per partition (``processors/cursor.py``). These tests hand the
processor exactly what faust handed it in the load attack (tests/security/test_attack_processors.py),
deterministically: the real records from Kafka, in the order faust delivered them. A take-over
after a generation this instance missed reloads its partitions: the commands it still runs go on."""

import asyncio
import secrets
import threading
import time

from astraforge.kafka import read_range
from astraforge.processors.catch_up import BATCH
from astraforge.processors.runtime import Source
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.kafka import Appended, EventProducer
from tests.integration.test_processor_ownership import owned_ready_sandbox, processor  # noqa: F401 (fixture)
from tests.integration.test_processor_restart import command, exec_command
from tests.scale.cluster import command_ledger, records
from tests.support import wait_until


def appended_execs(proc: SandboxProcessor, sandbox_id: str, n: int) -> tuple[list[str], list[Appended]]:
    """``n`` async exec commands for the sandbox, appended to the commands topic as the API does."""
    producer = EventProducer(proc.settings)
    ids = [f"cmd-{i}-{secrets.token_hex(4)}" for i in range(n)]
    appended = [producer.append(exec_command(sandbox_id, cid, f"echo {i}")) for i, cid in enumerate(ids)]
    producer.close()
    return ids, appended


def delivered(proc: SandboxProcessor, at: Appended) -> tuple[Source, bytes]:
    """The record at ``at`` as faust hands it to the proc's loop."""
    s = proc.settings
    (msg,) = read_range(s, s.commands_topic, at.partition, at.offset, at.offset + 1)
    return Source(s.commands_topic, at.partition, at.offset, msg.key()), msg.value()


def accepted_in_order(proc: SandboxProcessor, sandbox_id: str) -> list[str]:
    return [e.payload["command_id"] for e in records(proc.settings, sandbox_id) if e.type == "exec.accepted"]


def each_finished_once(proc: SandboxProcessor, sandbox_id: str, ids: list[str]) -> None:
    def done() -> bool:
        ledger = command_ledger(records(proc.settings, sandbox_id))
        return all(ledger.get(cid, {}).get("exec.finished") for cid in ids)

    wait_until(done, timeout=60, interval=0.5, what="every command finished")
    ledger = command_ledger(records(proc.settings, sandbox_id))
    assert all(ledger[cid] == {"exec.accepted": 1, "exec.started": 1, "exec.finished": 1} for cid in ids), ledger


def test_a_command_delivered_past_unhandled_ones_is_handled_after_them(processor) -> None:  # noqa: F811
    """The first record the loop sees after a rebalance is the last of four (faust resumed past the
    three its revocation dropped). On main it was handled alone and the table's handled-offset mark
    jumped past the three: they were never accepted. Now the three come first, in order, each once,
    and a redelivery of one of them changes nothing."""
    sid = owned_ready_sandbox(processor)
    try:
        ids, appended = appended_execs(processor, sid, 4)
        processor.handle(*delivered(processor, appended[-1]))
        assert accepted_in_order(processor, sid) == ids
        processor.handle(*delivered(processor, appended[1]))  # redelivered: handled already
        each_finished_once(processor, sid, ids)
    finally:
        processor.provider.stop(sid)


def test_a_take_over_handles_the_commands_left_before_it_whatever_the_group_committed(processor) -> None:  # noqa: F811
    """Commands that reached the partition but were never handled (dropped from faust's buffer at a
    revocation, their offsets committed by faust) and no command after them: the partition is kept
    across the rebalance and stays quiet. On main nothing ever handled them; now the take-over
    catches up from the partition's cursor."""
    sid = owned_ready_sandbox(processor)
    try:
        ids, _ = appended_execs(processor, sid, 3)
        processor._suspend_now(frozenset({0}))  # a rebalance: partition 0 is revoked and assigned again
        processor.runtime.continued = True  # straight after the one before: kept, not reloaded
        asyncio.run(processor._assigned(frozenset({0})))
        assert processor.catch_up.wait(60)  # on a thread of its own, after the hook
        assert accepted_in_order(processor, sid) == ids
        each_finished_once(processor, sid, ids)
    finally:
        processor.provider.stop(sid)


def test_a_take_over_after_a_missed_generation_leaves_the_command_this_instance_runs_running(
    processor,  # noqa: F811
) -> None:
    """The group went a generation without this instance (``continued`` false), so the take-over
    reloads the partition it held. Its own command is still running: on main the reload closed it
    as interrupted and cancelled it; now it finishes, once, with its own exit code and output."""
    sid = owned_ready_sandbox(processor)
    s = processor.settings
    try:
        cid = f"cmd-{secrets.token_hex(4)}"
        wait_for_go = "echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done"
        producer = EventProducer(s)
        at = producer.append(exec_command(sid, cid, wait_for_go))
        producer.close()
        processor.handle(*delivered(processor, at))
        wait_until(
            lambda: any(e.type == "exec.output" for e in records(s, sid)), timeout=60, what="the command running"
        )

        processor._suspend_now(frozenset({0}))  # a rebalance this instance missed a generation of
        processor.runtime.continued = False
        asyncio.run(processor._assigned(frozenset({0})))
        processor.provider.handle(processor.state(sid).runtime_id).client.exec(argv=["touch", "/tmp/go"])

        each_finished_once(processor, sid, [cid])
        (done,) = [e for e in records(s, sid) if e.type == "exec.finished"]
        assert done.payload["error"] is None and done.payload["exit_code"] == 0, done.payload
        output = b"".join(e.payload["data"] for e in records(s, sid) if e.type == "exec.output")
        assert output == b"started\ndone\n"
    finally:
        processor.provider.stop(sid)


def test_a_backlog_at_a_take_over_is_handled_after_the_hook_and_before_newer_records(processor) -> None:  # noqa: F811
    """The take-over's catch-up runs on a thread of its own: the rebalance hook returns while the
    catch-up of a backlog is held (on main the hook itself handled the backlog, N durable appends
    before faust resumed consuming any partition). A record faust delivers meanwhile waits for it:
    every command is handled once, in offset order. The order is forced by a gate, not by timing."""
    sid = owned_ready_sandbox(processor)
    entered, release = threading.Event(), threading.Event()
    catch_up = processor.cursor.catch_up

    def gated(*args, **kwargs) -> int:  # the catch-up holds the partition's lock here
        entered.set()
        release.wait(120)
        return catch_up(*args, **kwargs)

    try:
        assert processor.catch_up.wait(60)  # the catch-up of the take-over that made the sandbox ready
        ids, _ = appended_execs(processor, sid, 3)  # the backlog: accepted by the API, never handled
        processor.cursor.catch_up = gated
        processor._suspend_now(frozenset({0}))  # a rebalance: partition 0 is revoked and assigned again
        processor.runtime.continued = True
        processor.runtime.lease.renew(time.monotonic(), time.time())  # as an acknowledged heartbeat does
        hook = threading.Thread(target=asyncio.run, args=(processor._assigned(frozenset({0})),))
        hook.start()
        hook.join(60)
        assert not hook.is_alive(), "the rebalance hook waited for the backlog"
        assert entered.wait(60) and accepted_in_order(processor, sid) == [], "the backlog ran before the hook returned"

        newer, appended = appended_execs(processor, sid, 1)
        delivered_now = threading.Thread(target=processor.handle, args=delivered(processor, appended[0]))
        delivered_now.start()  # waits for the partition's lock, which the catch-up holds
        processor.runtime.lease.renew(time.monotonic(), time.time())
        release.set()
        delivered_now.join(60)
        assert processor.catch_up.wait(60) and not delivered_now.is_alive()
        assert accepted_in_order(processor, sid) == ids + newer
        each_finished_once(processor, sid, ids + newer)
    finally:
        release.set()
        processor.provider.stop(sid)


def test_a_revocation_during_a_long_catch_up_waits_for_one_batch_not_the_backlog(processor) -> None:  # noqa: F811
    """The catch-up holds the partition's lock a batch at a time: a revocation that begins while the
    first batch runs suspends the partition once that batch is done, and the rest of the backlog is
    left to the next take-over (from the cursor). Holding the lock for the whole backlog would make
    the revocation hook wait for every command of it."""
    sid = owned_ready_sandbox(processor)
    entered, release = threading.Event(), threading.Event()
    handle_one = processor.catch_up.handle
    calls = []

    def gated(source: Source, value: bytes) -> None:  # the first batch stops at its third command
        calls.append(source.offset)
        if len(calls) == 3:
            entered.set()
            release.wait(120)
        handle_one(source, value)

    try:
        assert processor.catch_up.wait(60)
        producer = EventProducer(processor.settings)
        backlog = [producer.append(command(sid, "sandbox.heartbeat", {"reason": None})) for _ in range(BATCH + 6)]
        producer.close()
        processor.catch_up.handle = gated
        processor._suspend_now(frozenset({0}))
        processor.runtime.continued = True
        processor.runtime.lease.renew(time.monotonic(), time.time())
        asyncio.run(processor._assigned(frozenset({0})))
        assert entered.wait(60)
        revocation = threading.Thread(target=processor._suspend_now, args=(frozenset({0}),))
        revocation.start()  # waits for the batch under way
        release.set()
        revocation.join(60)
        assert not revocation.is_alive() and processor.catch_up.wait(60)
        assert calls == [at.offset for at in backlog[:BATCH]], "the revocation waited for more than one batch"
        assert processor.cursor.position(0) == backlog[BATCH].offset
    finally:
        release.set()
        processor.provider.stop(sid)
