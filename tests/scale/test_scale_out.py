"""Scale-out of the sandbox processor: several instances on one docker engine, through the public API.

Kill -9 of one instance in the middle of provisions and long commands: its partitions move to the
others, every command is handled once in effect (one ``exec.accepted``, at most one ``exec.started``,
one ``exec.finished``), every running command is read on by the new owner to its end, and no container
is provisioned twice or reaped wrongly (each sandbox keeps the container it was first given).
Adding an instance under load loses nothing either.
"""

import threading
import time

import pytest

from astraforge.producers.kafka import EventProducer
from tests.gated_image import GATED_IMAGE, build_gated_image, containers_of, release
from tests.scale.cluster import (
    Api,
    Instance,
    command_ledger,
    containers,
    count,
    create_command,
    elapsed,
    partition,
    provisioned,
    records,
    split_evenly,
    wait_finished,
)
from tests.scale.conftest import PARTITIONS
from tests.support import sandbox_ids_in, wait_until

LOAD_STEP = 12  # commands answered between two changes of the group


def owner_of(owned: dict[str, set[int]]) -> dict[int, str]:
    return {p: name for name, parts in owned.items() for p in parts}


def sandboxes_on_every_instance(s, api: Api, owned: dict[str, set[int]], at_least: int = 2) -> list[str]:
    """Create sandboxes until each instance owns at least ``at_least`` of them."""
    made: list[str] = []
    while any(sum(1 for sid in made if partition(s, sid) in parts) < at_least for parts in owned.values()):
        assert len(made) < 40, "sandbox ids never reached every instance's partitions"
        sandbox = api.create()
        assert sandbox["state"] == "ready", sandbox
        made.append(sandbox["id"])
    return made


def assert_once_in_effect(s, sandbox_ids: list[str]) -> dict[str, dict]:
    """Each command: accepted once, started at most once, finished once. Returns each command's finish."""
    finishes = {}
    for sid in sandbox_ids:
        events = records(s, sid)
        for cid, seen in command_ledger(events).items():
            once = seen["exec.accepted"] == 1 and seen["exec.started"] <= 1 and seen["exec.finished"] == 1
            assert once, (sid, cid, seen)
            (done,) = [e for e in events if e.type == "exec.finished" and e.payload["command_id"] == cid]
            finishes[cid] = done.payload
        assert provisioned(events) == 1 and count(events, "sandbox.provisioning") == 1, sid
    return finishes


@pytest.mark.slow
@pytest.mark.timeout(900)  # subprocess start-ups and a session timeout, on a shared 2-core machine
def test_kill_9_of_one_of_two_instances_mid_provision_and_mid_exec(deployment) -> None:
    s, api, provider, logs = deployment
    build_gated_image(provider.client, s.sandbox_image)
    a, b = Instance(s, "proc-a", logs), Instance(s, "proc-b", logs)
    try:
        owned = split_evenly([a, b], PARTITIONS)
        ready = sandboxes_on_every_instance(s, api, owned)
        first_containers = containers(provider)
        assert set(ready) <= set(first_containers)
        long = {
            sid: api.exec(sid, "echo started; sleep 25; echo finished", run_async=True)["command_id"] for sid in ready
        }
        for sid, cid in long.items():  # every instance runs commands for its own partitions
            wait_until(
                lambda sid=sid, cid=cid: count(records(s, sid), "exec.started", command_id=cid),
                timeout=60,
                interval=0.2,
                what=f"{cid} started",
            )
        # provisions on the instance about to die, held at a known point: container made, supervisor gated
        provisioning = sandbox_ids_in(s, owned["proc-a"], 2)
        EventProducer(s).append_many([create_command(api, GATED_IMAGE, sid) for sid in provisioning])
        for sid in provisioning:
            wait_until(lambda sid=sid: containers_of(provider, sid), timeout=60, interval=0.1, what=f"{sid} held")
        assert not any(count(records(s, sid), "sandbox.ready") for sid in provisioning), "mid-provision"

        killed = time.monotonic()
        a.kill9()  # mid-exec (every long command is running) and mid-provision (a's creates are held)
        held = {sid: containers_of(provider, sid) for sid in provisioning}
        for sid in provisioning:
            release(provider, sid)
        wait_until(lambda: b.owned() == set(range(PARTITIONS)), timeout=90, what="b owns every partition")
        print(f"failover after kill -9: {elapsed(killed)}s")

        finishes = {sid: wait_finished(s, sid, cid) for sid, cid in long.items()}
        for sid, done in finishes.items():  # a's went on in their sandboxes: b re-attached and read them on
            assert done.payload["exit_code"] == 0 and done.payload["error"] is None, done
            output = [e.payload["data"] for e in records(s, sid) if e.type == "exec.output"]
            assert b"".join(output) == b"started\nfinished\n", (sid, output)
        for sid in provisioning:
            wait_until(
                lambda sid=sid: count(records(s, sid), "sandbox.ready"),
                timeout=90,
                interval=0.5,
                what=f"{sid} ready after the failover",
            )
        after = containers(provider)
        for sid in ready:  # neither re-provisioned nor reaped: the same container throughout
            assert after.get(sid) == first_containers[sid], sid
        for sid in [*ready, *provisioning]:
            assert api.exec(sid, "echo converged")["stdout"] == "converged\n"
        finished = assert_once_in_effect(s, [*ready, *provisioning])
        assert set(long.values()) <= set(finished)
        for sid in provisioning:  # b finished a's provision in the container a had made
            assert provisioned(records(s, sid)) == 1 and containers_of(provider, sid) == held[sid], sid
    finally:
        a.stop()
        b.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_instances_added_under_load_lose_nothing_and_a_third_survives_kill_9(deployment) -> None:
    s, api, provider, logs = deployment
    instances = [Instance(s, "proc-1", logs)]
    results: list[dict] = []
    errors: list[str] = []
    stop = threading.Event()
    try:
        owners = [owner_of(split_evenly(instances, PARTITIONS))]
        sandboxes = [api.create()["id"] for _ in range(4)]
        first_containers = containers(provider)

        def load(sid: str) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    results.append({"sid": sid, "n": n, **api.exec(sid, f"echo {n}")})
                except AssertionError as e:  # a non-200 answer
                    errors.append(str(e))

        workers = [threading.Thread(target=load, args=(sid,), daemon=True) for sid in sandboxes]
        for w in workers:
            w.start()
        wait_until(lambda: len(results) >= LOAD_STEP, timeout=120, what="load running")
        instances.append(Instance(s, "proc-2", logs))
        owners.append(owner_of(split_evenly(instances, PARTITIONS)))
        served = len(results)
        wait_until(lambda: len(results) >= served + LOAD_STEP, timeout=120, what="load served by two")
        instances.append(Instance(s, "proc-3", logs))
        owned = split_evenly(instances, PARTITIONS)
        owners.append(owner_of(owned))
        served = len(results)
        wait_until(lambda: len(results) >= served + LOAD_STEP, timeout=120, what="load served by three")
        stop.set()
        for w in workers:
            w.join(timeout=180)

        assert not errors, errors[:3]
        interrupted = sum(1 for r in results if r["exit_code"] is None)
        print(f"{len(results)} commands under load, {interrupted} closed as interrupted by a rebalance")
        # a command still running on the old owner when its sandbox's partition moves goes on: the new
        # owner re-attaches to it (supervisor protocol 2), so each answer is its command's own result
        moved = {sid for sid in sandboxes if len({o[partition(s, sid)] for o in owners}) > 1}
        print(f"sandboxes whose partition moved under load: {len(moved)} of {len(sandboxes)}")
        for r in results:
            assert r["exit_code"] == 0 and r["stdout"] == f"{r['n']}\n", r
        assert_once_in_effect(s, sandboxes)
        after = containers(provider)
        assert all(after.get(sid) == first_containers[sid] for sid in sandboxes), "no sandbox re-provisioned"

        victim = instances[1]
        killed = time.monotonic()
        victim.kill9()
        survivors = [i for i in instances if i is not victim]
        split_evenly(survivors, PARTITIONS)
        print(f"failover after kill -9 (3 -> 2 instances): {elapsed(killed)}s; owned before: {owned}")
        for sid in sandboxes:
            assert api.exec(sid, "echo after")["stdout"] == "after\n"
        assert_once_in_effect(s, sandboxes)
    finally:
        stop.set()
        for i in instances:
            i.stop()
