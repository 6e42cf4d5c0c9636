import threading
from concurrent.futures import ThreadPoolExecutor

from astraforge.processors.lanes import CommandThreads, TenantLanes
from tests.support import wait_until


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


def test_command_threads_reuse_an_idle_thread_and_never_queue_behind_a_running_command() -> None:
    threads = CommandThreads("test-command")
    ran: list[str] = []
    first_done = threading.Event()
    threads.submit(lambda: (ran.append(threading.current_thread().name), first_done.set()))
    assert first_done.wait(5)
    release, long_started, second_done = threading.Event(), threading.Event(), threading.Event()

    def long() -> None:
        ran.append(threading.current_thread().name)
        long_started.set()
        release.wait(10)

    while not threads.idle:  # the first thread is back in the idle list (it appends after its command)
        threading.Event().wait(0.001)
    threads.submit(long)
    assert long_started.wait(5)
    threads.submit(lambda: (ran.append(threading.current_thread().name), second_done.set()))
    assert second_done.wait(5), "a command waited behind a running one"
    release.set()
    assert ran[0] == ran[1] == "test-command-1", "the idle thread ran the next command (no new thread)"
    assert ran[2] == "test-command-2", "a running command's thread is never shared"


def test_command_threads_keep_only_a_few_idle_threads_after_a_burst() -> None:
    threads = CommandThreads("test-burst", keep_idle=2)
    release = threading.Event()
    started = threading.Semaphore(0)

    def long() -> None:
        started.release()
        release.wait(10)

    for _ in range(6):
        threads.submit(long)
    for _ in range(6):
        assert started.acquire(timeout=5)
    burst = {t for t in threading.enumerate() if t.name.startswith("test-burst")}
    assert len(burst) == 6
    release.set()
    wait_until(lambda: sum(t.is_alive() for t in burst) == 2, timeout=5, what="the threads past two idle ones ended")
    assert threads.idle == 2
