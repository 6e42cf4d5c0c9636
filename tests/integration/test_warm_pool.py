"""A warm container is claimed once: whatever order a create's claim and a reconcile's adopt run in,
no two sandboxes get the same container (real containers, real claim files)."""

import asyncio
import secrets
import threading
import time

from astraforge.config import WarmPool
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.processors.sandboxes.effects import ACTOR
from astraforge.processors.sandboxes.reconcile import orphans
from astraforge.processors.sandboxes.state import SandboxState, decide, requested_state
from astraforge.processors.sandboxes.warm_pool import WarmPools
from astraforge.producers.kafka import EventProducer
from tests.integration.test_processor_startup import create
from tests.support import sandbox_ids_in, wait_until


def sandbox(settings) -> SandboxState:
    sid = f"sb-{secrets.token_hex(16)}"
    return SandboxState(sandbox_id=sid, stream_id=sid, tenant_id="acme", image=settings.sandbox_image)


def test_an_adopt_decided_before_a_claim_never_puts_the_claimed_container_back(settings, docker_provider) -> None:
    s = settings.model_copy(update={"warm_pools": [WarmPool(size=1)], "instance_id": f"warm-{secrets.token_hex(4)}"})
    before = WarmPools(s, docker_provider, lambda: False)
    before.refill()
    (warm,) = before.warm[0]
    try:
        # the same instance restarted: its warm container is present, in no pool yet. Two reconciles
        # (two take-overs in a row, or a take-over and the periodic one) look before either adopts.
        pools = WarmPools(s, docker_provider, lambda: False)
        present = docker_provider.list_ids()
        looks = [orphans(present, [], set(), lambda _: 0, pools.view(present)).adopt for _ in range(2)]
        assert looks == [[(0, warm)], [(0, warm)]]

        pools.adopt(*looks[0][0])
        assert pools.claim(sandbox(s)) == warm
        pools.adopt(*looks[1][0])  # the second adopt runs after the claim
        assert pools.claim(sandbox(s)) is None, "the claimed container went back into the pool"
    finally:
        docker_provider.stop(warm)
        before.forget(warm)


def test_concurrent_claims_get_distinct_containers_and_each_is_marked(settings, docker_provider) -> None:
    s = settings.model_copy(update={"warm_pools": [WarmPool(size=2)], "instance_id": f"warm-{secrets.token_hex(4)}"})
    pools = WarmPools(s, docker_provider, lambda: False)
    pools.refill()
    warm = list(pools.warm[0])
    try:
        claimers = [sandbox(s) for _ in range(3)]
        got: dict[str, str | None] = {}
        start = threading.Barrier(len(claimers))

        def claim(st: SandboxState) -> None:
            start.wait()
            got[st.sandbox_id] = pools.claim(st)

        threads = [threading.Thread(target=claim, args=(st,)) for st in claimers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        claimed = {sid: rid for sid, rid in got.items() if rid}
        assert sorted(claimed.values()) == sorted(warm), got  # two got one each, the third none
        for sid, rid in claimed.items():  # the claim is on disk the moment claim() returns
            assert pools.claimed_by(rid) == sid
            assert not pools.adopt(0, rid)
        present = docker_provider.list_ids()
        assert orphans(present, [], set(), lambda _: 0, pools.view(present)).adopt == []
    finally:
        for rid in warm:
            docker_provider.stop(rid)
            pools.forget(rid)


def test_a_provision_stopped_after_its_warm_claim_completes_in_the_claimed_container(fresh_settings) -> None:
    """An instance claimed a warm container for a create and died before ``sandbox.ready``: the new
    owner of the partition completes the provision in that container, not in a second, cold one."""
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(
        update={
            "sandbox_provider": "docker",
            "warm_pools": [WarmPool(size=1)],
            "instance_id": f"warm-{secrets.token_hex(4)}",
        }
    )
    provider = make_provider(s)
    dead = WarmPools(s, provider, lambda: False)  # the instance that died: its pool, its claim
    dead.refill()
    (warm,) = dead.warm[0]
    (sid,) = sandbox_ids_in(s, {0})
    decision = decide(None, create(sid), 0, ACTOR)  # what it wrote: sandbox.requested, sandbox.provisioning
    processor = SandboxProcessor(s.model_copy(update={"instance_id": f"new-{secrets.token_hex(4)}"}), provider)
    try:
        assert dead.claim(requested_state(decision.events[0])) == warm  # ...and how far its provision got
        EventProducer(s).append_many(decision.events)
        processor.runtime.lease.renew(time.monotonic(), time.time())  # as an acknowledged heartbeat does
        asyncio.run(processor._assigned(frozenset({0})))  # the new owner's take-over re-drives the provision
        wait_until(lambda: getattr(processor.state(sid), "state", None) == "ready", timeout=60, what="ready")
        assert processor.state(sid).provider_id == warm
        assert sid not in provider.list_ids(), "provisioned twice: a cold container beside the claimed one"
    finally:
        processor.lanes["provision"].shutdown(wait=True)
        processor.close()
        for runtime_id in (warm, sid):
            provider.stop(runtime_id)
            dead.forget(runtime_id)
