"""Start-up cost follows live state, not history: a new instance restores the sandboxes of its
partitions from the processor's table (changelog) and reads only the events written after the
table's mark; ended sandboxes have left the table."""

import secrets
import threading
import time

from astraforge.kafka import high_watermarks, read_range, reader
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox
from tests.integration.test_processor_restart import command, exec_command, seen
from tests.support import chat, wait_until

HISTORY = 5000


def create(sandbox_id: str) -> Envelope:
    spec = RequestedSandbox("astraforge/sandbox:bookworm", idle_timeout_s=600, ttl_s=600)
    return command(sandbox_id, "sandbox.create", spec.create_payload())


def running(processor: SandboxProcessor) -> threading.Thread:
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    return thread


def test_a_new_instance_reads_live_state_not_history(fresh_settings) -> None:
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    provider = make_provider(s)
    producer = EventProducer(s)
    live, *ended = (f"sb-{secrets.token_hex(16)}" for _ in range(3))
    first = SandboxProcessor(s, provider, ended_grace_s=0)
    thread = running(first)
    try:
        producer.append_many([create(sid) for sid in (live, *ended)])
        for sid in (live, *ended):
            wait_until(lambda sid=sid: seen(s, sid, "sandbox.ready"), timeout=60, what=f"{sid} ready")
        producer.append_many([command(sid, "sandbox.stop", {"reason": "done"}) for sid in ended])
        wait_until(lambda: all(first.state(sid) is None for sid in ended), timeout=60, what="ended sandboxes left")
        for i in range(HISTORY):  # history in the live sandbox's partition (any stream's records count)
            producer.send(chat(live, "acme", f"message {i}"))
        producer.flush()
        producer.append(command(live, "sandbox.heartbeat", {"reason": None}))  # the table's mark moves past it
        wait_until(lambda: seen(s, live, "sandbox.heartbeat.recorded"), timeout=30, what="heartbeat")
    finally:
        first.stop()
        thread.join(timeout=60)

    consumer = reader(s)
    total = sum(high_watermarks(consumer, s.events_topic, s.kafka_timeout_s).values())
    consumer.close()
    began = time.monotonic()
    second = SandboxProcessor(s, provider)
    thread = running(second)
    try:
        wait_until(lambda: second.takeovers, timeout=60, what="the second instance took over")
        startup = time.monotonic() - began
        (took,) = second.takeovers
        assert took["sandboxes"] == 1 and took["events_read"] < 10, (took, total)
        assert second.state(live).state == "ready" and all(second.state(sid) is None for sid in ended)
        producer.append(exec_command(live, "after-restart", "echo restored"))
        wait_until(
            lambda: seen(s, live, "exec.finished", command_id="after-restart", exit_code=0),
            timeout=30,
            what="the restored sandbox runs commands",
        )
        rebuild = time.monotonic()  # what the start-up was before: decode every record of the events topic
        decoded = sum(1 for p in range(s.topic_partitions) for _ in read_range(s, s.events_topic, p, 0, None))
        print(
            f"start-up with {total} events in the log: {startup:.2f}s (takeover {took['seconds']}s, "
            f"{took['events_read']} events read); a full read of the log: {time.monotonic() - rebuild:.2f}s "
            f"for {decoded} records"
        )
    finally:
        second.stop()
        thread.join(timeout=60)
        for sid in (live, *ended):
            provider.stop(sid)
