import threading
from concurrent.futures import ThreadPoolExecutor

from astraforge.processors.lanes import TenantLanes


def test_a_tenant_past_its_share_waits_outside_the_pool_and_others_still_run() -> None:
    release = threading.Event()
    started: list[str] = []
    done = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        lanes = TenantLanes(pool, share=2)

        def stuck(name: str) -> None:
            started.append(name)
            release.wait(10)

        for i in range(6):
            lanes.submit("greedy", stuck, f"greedy-{i}")
        lanes.submit("other", lambda: done.set())
        assert done.wait(5), "another tenant's effect found no free worker"
        assert sorted(started) == ["greedy-0", "greedy-1"], "only the share of the greedy tenant runs"
        all_ran = threading.Event()
        lanes.submit("greedy", all_ran.set)  # queued behind the four waiting ones
        release.set()
        assert all_ran.wait(5), "the queued effects ran once the first ones ended"
    assert sorted(started) == [f"greedy-{i}" for i in range(6)]
