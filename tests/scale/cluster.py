"""A small deployment for the scale-out tests: the API and the projector in this process, sandbox
processor instances as subprocesses (``astraforge processors sandboxes``, each with its own
``instance_id``) on the session's docker engine, and helpers that read what happened from the
sandboxes' streams (Kafka, the source of truth) and from docker."""

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from astraforge.audit import stream_records
from astraforge.kafka import partition_for
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox
from tests.support import auth, cli_env, get_artifact, wait_until

OWNS = re.compile(r"sandboxes owns partitions \[([0-9, ]*)\]")


class Instance:
    """One processor instance in a subprocess; its log says which partitions it owns."""

    def __init__(self, settings, name: str, logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        self.out = self.log.open("w")
        env = {**cli_env(settings), "ASTRAFORGE_INSTANCE_ID": name}
        cmd = [sys.executable, "-m", "astraforge.cli", "processors", "sandboxes"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.out, stderr=subprocess.STDOUT)

    def owned(self) -> set[int] | None:
        assert self.proc.poll() is None, f"{self.name} exited: {self.log.read_text()[-3000:]}"
        found = OWNS.findall(self.log.read_text())
        return {int(p) for p in found[-1].split(",") if p.strip()} if found else None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: every thread stops where it is (a long GC pause, a frozen VM), sockets stay open."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.thaw()  # a frozen instance cannot handle its SIGINT
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def split_evenly(instances: list[Instance], partitions: int, timeout: float = 90) -> dict[str, set[int]]:
    """Wait until the live instances own disjoint sets covering every partition, each a share."""

    def settled() -> bool:
        owned = [i.owned() for i in instances]
        if any(not o for o in owned):
            return False
        union = set().union(*owned)
        return union == set(range(partitions)) and sum(len(o) for o in owned) == partitions

    wait_until(settled, timeout=timeout, what=f"partitions split among {[i.name for i in instances]}")
    return {i.name: i.owned() for i in instances}


class Api:
    def __init__(self, url: str, tenant: str, key: str) -> None:
        self.url = url
        self.tenant = tenant
        self.key = key

    def post(self, path: str, json=None, **params) -> httpx.Response:
        return httpx.post(f"{self.url}/v1{path}", headers=auth(self.key), json=json, params=params, timeout=180)

    def create(self, wait: bool = True) -> dict:
        r = self.post("/sandboxes", {}, wait=str(wait).lower())
        assert r.status_code == 201, r.text
        return r.json()

    def exec(self, sandbox_id: str, command: str, run_async: bool = False, timeout_sec: float = 120) -> dict:
        r = self.post(f"/sandboxes/{sandbox_id}/exec", {"command": command, "async": run_async,
                                                        "timeout_sec": timeout_sec})  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()


def records(settings, stream_id: str) -> list[Envelope]:
    return [p.envelope for p in stream_records(settings, stream_id)]


def partition(settings, stream_id: str) -> int:
    return partition_for(stream_id, settings.topic_partitions)


def count(events: list[Envelope], type_: str, **payload) -> int:
    return sum(1 for e in events if e.type == type_ and all(e.payload.get(k) == v for k, v in payload.items()))


def provisioned(events: list[Envelope]) -> int:
    """How many times the sandbox was made ready by a provision (busy -> ready does not count)."""
    return sum(1 for e in events if e.type == "sandbox.ready" and "warm_pool" in (e.payload["details"] or {}))


def command_ledger(events: list[Envelope]) -> dict[str, Counter]:
    """Per command id: how many of each of its records the stream holds."""
    ledger: dict[str, Counter] = {}
    for e in events:
        cid = e.payload.get("command_id") if isinstance(e.payload, dict) else None
        if cid and e.type in ("exec.accepted", "exec.started", "exec.finished"):
            ledger.setdefault(cid, Counter())[e.type] += 1
    return ledger


def containers(provider) -> dict[str, str]:
    """sandbox id -> docker container id, for this deployment's namespace."""
    mine = {"label": f"astraforge.namespace={provider.namespace}"}
    found = provider.client.containers.list(all=True, sparse=True, filters=mine)  # no inspect racing a removal
    return {c.attrs["Labels"]["astraforge.sandbox_id"]: c.id for c in found}


def wait_finished(settings, sandbox_id: str, command_id: str, timeout: float = 120) -> Envelope:
    def done():
        return [e for e in records(settings, sandbox_id) if e.type == "exec.finished"
                and e.payload["command_id"] == command_id]  # fmt: skip

    wait_until(done, timeout=timeout, interval=0.5, what=f"{command_id} finished")
    return done()[0]


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 1)


def command(tenant: str, sandbox_id: str, type_: str, payload: dict) -> Envelope:
    """A command record as the API would append it (tests append some directly, to time them)."""
    return Envelope(type=type_, stream_id=sandbox_id, tenant_id=tenant, actor="test", sandbox_id=sandbox_id,
                    payload=payload)  # fmt: skip


def create_command(api, image: str, sandbox_id: str, restore_snapshot: str | None = None) -> Envelope:
    """A ``sandbox.create`` command for a sandbox id the test chose (e.g. for its partition)."""
    spec = RequestedSandbox(image, idle_timeout_s=600, ttl_s=600, restore_snapshot=restore_snapshot)
    return command(api.tenant, sandbox_id, "sandbox.create", spec.create_payload())


def create_restoring(api, image: str, sandbox_id: str, snapshot_id: str) -> Envelope:
    """A ``sandbox.create`` command that restores ``snapshot_id`` into the new sandbox."""
    return create_command(api, image, sandbox_id, snapshot_id)


def snapshot_with_kept_file(api) -> str:
    """The id of a projected snapshot of a sandbox holding ``kept.txt`` ("kept\\n")."""
    source = api.create()["id"]
    assert api.exec(source, "echo kept > /workspace/kept.txt")["exit_code"] == 0
    snapshot = api.post(f"/sandboxes/{source}/snapshots")
    assert snapshot.status_code == 201, snapshot.text
    snapshot_id = snapshot.json()["id"]
    assert get_artifact(api.url, api.key, snapshot_id).status_code == 200  # projected
    return snapshot_id


def read_kept_file(api, sandbox_id: str, command_id: str) -> Envelope:
    """An async ``sandbox.exec`` command that prints the snapshot's ``kept.txt``."""
    return command(api.tenant, sandbox_id, "sandbox.exec", {
        "command_id": command_id, "argv": [], "shell": "cat kept.txt", "cwd": "/workspace", "env": {},
        "timeout_s": 60.0, "async_": True})  # fmt: skip
