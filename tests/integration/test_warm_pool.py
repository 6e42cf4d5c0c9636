"""A warm container is claimed once: whatever order a create's claim and a reconcile's adopt run in,
no two sandboxes get the same container (real containers, real claim files)."""

import secrets
import threading

from astraforge.config import WarmPool
from astraforge.processors.sandboxes.reconcile import orphans
from astraforge.processors.sandboxes.state import SandboxState
from astraforge.processors.sandboxes.warm_pool import WarmPools


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
