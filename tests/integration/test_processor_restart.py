"""kill -9 of the sandbox processor mid-provision and mid-exec: nothing leaks, nothing runs twice,
the state converges, and the records say what happened."""

import secrets
import signal
import subprocess
import sys
import time

from astraforge.audit import stream_records
from astraforge.producers.kafka import EventProducer
from astraforge.sandbox.providers.base import SandboxSpec
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox
from tests.support import cli_env, wait_until


def records(settings, sandbox_id: str) -> list[Envelope]:
    return [p.envelope for p in stream_records(settings, sandbox_id)]


def seen(settings, sandbox_id: str, type_: str, **payload) -> bool:
    return any(e.type == type_ and all(e.payload.get(k) == v for k, v in payload.items())
               for e in records(settings, sandbox_id))  # fmt: skip


def command(sandbox_id: str, type_: str, payload: dict) -> Envelope:
    return Envelope(type=type_, stream_id=sandbox_id, tenant_id="acme", actor="test", sandbox_id=sandbox_id,
                    payload=payload)  # fmt: skip


def create_commands(sandbox_id: str) -> list[Envelope]:
    lifecycle = {"state": "requested", "reason": None, "provider": None, "image": "astraforge/sandbox:bookworm"}
    requested = command(sandbox_id, "sandbox.requested", {**lifecycle, "details": {}})
    spec = RequestedSandbox("astraforge/sandbox:bookworm", idle_timeout_s=600, ttl_s=600)
    create = command(sandbox_id, "sandbox.create", spec.create_payload())
    return [requested, create]


def exec_command(sandbox_id: str, command_id: str, shell: str) -> Envelope:
    return command(sandbox_id, "sandbox.exec", {"command_id": command_id, "argv": [], "shell": shell, "cwd": None,
                                                "env": {}, "timeout_s": 120.0, "async_": True})  # fmt: skip


def start(settings) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "astraforge.cli", "processors", "sandboxes"]
    return subprocess.Popen(cmd, env=cli_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_9_mid_exec_and_mid_provision(fresh_settings) -> None:
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    docker_provider = make_provider(s)  # the processors' namespace (this test's topic prefix)
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
        producer.append_many(create_commands(a))
        wait_until(lambda: seen(s, a, "sandbox.ready"), timeout=60, what="sandbox a ready")
        producer.append(exec_command(a, "long-1", "echo started; sleep 60"))
        wait_until(lambda: seen(s, a, "exec.started", command_id="long-1"), timeout=30, what="exec started")
    finally:
        kill9(first)  # mid-exec

    docker_provider.create(SandboxSpec(orphan))  # a sandbox no state owns (e.g. leaked by a crash)
    second = start(s)
    try:
        wait_until(lambda: seen(s, a, "exec.finished", command_id="long-1"), timeout=60, what="interrupted exec closed")
        (finished,) = [e for e in records(s, a) if e.type == "exec.finished"]
        assert "interrupted" in finished.payload["error"]
        wait_until(lambda: orphan not in docker_provider.list_ids(), timeout=30, what="orphan reaped")
        producer.append(exec_command(a, "after-1", "echo converged"))
        wait_until(lambda: seen(s, a, "exec.finished", command_id="after-1", exit_code=0), timeout=30, what="converged")
        producer.append_many(create_commands(b))
        wait_until(lambda: seen(s, b, "sandbox.provisioning"), timeout=30, what="b provisioning")
    finally:
        kill9(second)  # mid-provision (or just after)

    third = start(s)
    try:
        wait_until(lambda: seen(s, b, "sandbox.ready"), timeout=60, what="b ready after restart")
        time.sleep(1)
        names = [c.name for c in docker_provider.client.containers.list(all=True)]
        assert names.count(f"af-{a}") == 1 and names.count(f"af-{b}") == 1, "no duplicate container"
        assert [e.type for e in records(s, a)].count("exec.started") == 2, "no command ran twice"
        assert sum(1 for e in records(s, b) if e.type == "sandbox.ready") == 1
        for sid in (a, b):
            producer.append(command(sid, "sandbox.stop", {"reason": "test over"}))
        wait_until(lambda: not {a, b} & docker_provider.list_ids(), timeout=30, what="stopped")
    finally:
        third.terminate()
        third.wait(timeout=30)
