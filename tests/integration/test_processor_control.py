"""Control survives failures: a stop the engine refused is recorded and retried by the periodic
reconcile until the container is gone, and a hung supervisor holds no control call forever (a stop
completes while cancels to it hang). Real engine, real supervisor, real failures."""

import contextlib
import os
import secrets
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.kafka import EventProducer
from astraforge.sandbox.providers import _local_docker
from astraforge.sandbox.providers.docker import DockerProvider
from tests.docker_relay import docker_relay
from tests.integration.test_processor_restart import command, create_command, records, seen
from tests.support import sandbox_ids_in, wait_until

HUNG_CALLS = 8  # more than the processor's control threads (4): on main they held them all, for ever


@contextmanager
def processor(settings, provider, **options) -> Iterator[SandboxProcessor]:
    proc = SandboxProcessor(settings, provider, **options)
    thread = threading.Thread(target=proc.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(proc.runtime.owned) == settings.topic_partitions, timeout=90, what="partitions owned")
        yield proc
    finally:
        proc.stop()
        thread.join(timeout=60)


def test_a_stop_the_engine_refused_is_recorded_and_retried_until_the_container_is_gone(fresh_settings) -> None:
    s = fresh_settings.model_copy(update={"warm_pools": []})
    engine = DockerProvider(s.state_dir, _local_docker(s), namespace=s.topic_prefix)  # the test's own view
    producer = EventProducer(s)
    sid = f"sb-{secrets.token_hex(16)}"
    with (
        docker_relay(Path(_local_docker(s).removeprefix("unix://")), Path(tempfile.mkdtemp()) / "d.sock") as relay,
        processor(s, DockerProvider(s.state_dir, relay.url, namespace=s.topic_prefix), reconcile_interval_s=1.0),
    ):
        try:
            producer.append(create_command(sid))
            wait_until(lambda: seen(s, sid, "sandbox.ready"), timeout=60, what="ready")

            relay.cut()  # the engine stops answering the processor
            producer.append(command(sid, "sandbox.stop", {"reason": "test over"}))

            def failure_recorded() -> bool:
                return any(e.type == "sandbox.stopping" and (e.payload["reason"] or "").startswith("stop failed")
                           for e in records(s, sid))  # fmt: skip

            wait_until(failure_recorded, timeout=30, interval=0.2, what="the failed stop recorded")
            assert sid in engine.list_ids(), "the container is still there"
            assert not seen(s, sid, "sandbox.terminated")

            relay.restore()  # no further command: the periodic reconcile finishes the stop
            wait_until(lambda: sid not in engine.list_ids(), timeout=30, interval=0.2, what="the container removed")
            wait_until(lambda: seen(s, sid, "sandbox.terminated"), timeout=30, what="terminated")
            stopping = [e.payload["reason"] for e in records(s, sid) if e.type == "sandbox.stopping"]
            assert len(stopping) == 2, "one record for the failure, not one per retry"
        finally:
            engine.stop(sid)


def test_a_stop_completes_while_control_calls_to_a_hung_supervisor_are_in_flight(fresh_settings) -> None:
    s = fresh_settings.model_copy(update={"warm_pools": []})
    provider = DockerProvider(s.state_dir, _local_docker(s), namespace=s.topic_prefix)
    producer = EventProducer(s)
    hung, other = sandbox_ids_in(s, {0}, 2)  # one partition: its loop dispatches the cancels before the stop
    pid = None
    with processor(s, provider) as proc:
        try:
            producer.append_many([create_command(hung), create_command(other)])
            for sid in (hung, other):
                wait_until(lambda sid=sid: seen(s, sid, "sandbox.ready"), timeout=60, what=f"{sid} ready")
            pid = provider.client.containers.get(provider.container_name(hung)).attrs["State"]["Pid"]
            os.kill(pid, signal.SIGSTOP)  # the supervisor takes connections (the kernel queues them), never answers
            cancels = [command(hung, "sandbox.exec.cancel", {"command_id": f"c-{i}"}) for i in range(HUNG_CALLS)]
            producer.append_many([*cancels, command(other, "sandbox.stop", {"reason": "test over"})])

            wait_until(lambda: seen(s, other, "sandbox.terminated"), timeout=30, interval=0.2, what="the stop served")
            assert other not in provider.list_ids()
            assert proc.state(hung).state == "ready"  # the hung one was only slow, not touched
        finally:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            for sid in (hung, other):
                provider.stop(sid)
