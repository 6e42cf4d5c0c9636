"""kill -9 of the sandbox processor mid-exec and mid-provision: nothing leaks, nothing runs twice,
the state converges, and the records say what happened. The command running at the kill goes on in
its sandbox and the next processor re-attaches to it: its output and exit are recorded once.

Mid-provision is guaranteed, not hoped for: the sandbox's image holds its supervisor at start-up
until the test releases it (``tests/gated_image.py``), so the real docker provider's create is
blocked at a known point (container made, supervisor not answering) when the kill lands.
"""

import secrets
import signal
import subprocess
import sys
from collections import Counter

from astraforge.audit import stream_records
from astraforge.producers.kafka import EventProducer
from astraforge.sandbox.providers.base import SandboxSpec
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox
from tests.gated_image import GATED_IMAGE, build_gated_image, containers_of, release
from tests.support import cli_env, wait_until

GATED_COMMAND = "echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo finished; exit 5"


def records(settings, sandbox_id: str) -> list[Envelope]:
    return [p.envelope for p in stream_records(settings, sandbox_id)]


def seen(settings, sandbox_id: str, type_: str, **payload) -> bool:
    return any(
        e.type == type_ and all(e.payload.get(k) == v for k, v in payload.items())
        for e in records(settings, sandbox_id)
    )


def count(settings, sandbox_id: str, type_: str) -> int:
    return sum(1 for e in records(settings, sandbox_id) if e.type == type_)


def command(sandbox_id: str, type_: str, payload: dict) -> Envelope:
    return Envelope(
        type=type_, stream_id=sandbox_id, tenant_id="acme", actor="test", sandbox_id=sandbox_id, payload=payload
    )


def create_command(sandbox_id: str, image: str = "astraforge/sandbox:bookworm") -> Envelope:
    """The ``sandbox.create`` command the API appends (the processor writes ``sandbox.requested``)."""
    spec = RequestedSandbox(image, idle_timeout_s=600, ttl_s=600)
    return command(sandbox_id, "sandbox.create", spec.create_payload())


def exec_command(sandbox_id: str, command_id: str, shell: str) -> Envelope:
    return command(
        sandbox_id,
        "sandbox.exec",
        {
            "command_id": command_id,
            "argv": [],
            "shell": shell,
            "cwd": None,
            "env": {},
            "timeout_s": 120.0,
            "async_": True,
        },
    )


def start(settings) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "astraforge.cli", "processors", "sandboxes"]
    return subprocess.Popen(cmd, env=cli_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_9_mid_exec_and_mid_provision(fresh_settings) -> None:
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(
        update={"sandbox_provider": "docker", "warm_pools": [], "sandbox_images": [GATED_IMAGE]}
    )
    docker_provider = make_provider(s)  # the processors' namespace (this test's topic prefix)
    build_gated_image(docker_provider.client, s.sandbox_image)
    a, b, orphan = (f"sb-{secrets.token_hex(16)}" for _ in range(3))
    try:
        _scenario(s, docker_provider, a, b, orphan)
    finally:
        for sid in (a, b, orphan):
            docker_provider.stop(sid)


def _scenario(s, docker_provider, a: str, b: str, orphan: str) -> None:
    producer = EventProducer(s)
    first = start(s)
    try:
        producer.append(create_command(a))
        wait_until(lambda: seen(s, a, "sandbox.ready"), timeout=60, what="sandbox a ready")
        producer.append(exec_command(a, "long-1", GATED_COMMAND))
        wait_until(lambda: seen(s, a, "exec.output", command_id="long-1"), timeout=30, what="exec running")
    finally:
        kill9(first)  # mid-exec: the command runs on in the sandbox until the test lets it end

    docker_provider.create(SandboxSpec(orphan))  # a sandbox no state owns (e.g. leaked by a crash)
    second = start(s)
    try:
        docker_provider.handle(a).client.exec(argv=["touch", "/tmp/go"])  # before or after the re-attach: either
        wait_until(lambda: seen(s, a, "exec.finished", command_id="long-1"), timeout=60, what="the exec collected")
        (finished,) = [e for e in records(s, a) if e.type == "exec.finished"]
        # the new owner re-attached to it (supervisor protocol 2): its output and exit, each once
        assert (finished.payload["exit_code"], finished.payload["error"]) == (5, None), finished.payload
        output = [e.payload for e in records(s, a) if e.type == "exec.output"]
        assert [o["seq"] for o in output] == list(range(len(output)))
        assert b"".join(o["data"] for o in output) == b"started\nfinished\n"
        wait_until(lambda: orphan not in docker_provider.list_ids(), timeout=30, what="orphan reaped")
        producer.append(exec_command(a, "after-1", "echo converged"))
        wait_until(lambda: seen(s, a, "exec.finished", command_id="after-1", exit_code=0), timeout=30, what="converged")

        producer.append(create_command(b, GATED_IMAGE))
        # the container exists and its supervisor is held: the provider's create is waiting on it
        wait_until(lambda: containers_of(docker_provider, b), timeout=60, interval=0.1, what="b's container made")
        assert seen(s, b, "sandbox.provisioning") and not seen(s, b, "sandbox.ready"), "mid-provision"
    finally:
        kill9(second)  # mid-provision, for certain: nothing can mark b ready until the release
    (held,) = containers_of(docker_provider, b)
    release(docker_provider, b)

    third = start(s)
    try:
        wait_until(lambda: seen(s, b, "sandbox.ready"), timeout=90, what="b ready after restart")
        assert containers_of(docker_provider, b) == [held], "the new owner finished the provision in its container"
        assert containers_of(docker_provider, a) and len(containers_of(docker_provider, a)) == 1
        assert count(s, b, "sandbox.ready") == 1 and count(s, b, "sandbox.provisioning") == 1
        assert not seen(s, b, "sandbox.failed")
        started = Counter(e.payload["command_id"] for e in records(s, a) if e.type == "exec.started")
        assert started == {"long-1": 1, "after-1": 1}, "no command ran twice"
        producer.append(exec_command(b, "on-b", "echo provisioned"))
        wait_until(lambda: seen(s, b, "exec.finished", command_id="on-b", exit_code=0), timeout=30, what="b serves")
        for sid in (a, b):
            producer.append(command(sid, "sandbox.stop", {"reason": "test over"}))
        wait_until(lambda: not {a, b} & docker_provider.list_ids(), timeout=30, what="stopped")
    finally:
        third.terminate()
        third.wait(timeout=30)
