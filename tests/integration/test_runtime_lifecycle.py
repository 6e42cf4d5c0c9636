"""A processor that is told to stop ends, and so does the process around it: faust's stop does not
return when it comes mid-rebalance, and mode ran faust's consumer on a non-daemon thread, so a test
run that had passed (or a processor sent SIGTERM) hung at interpreter exit."""

import threading

import mode.threads

from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.sandbox.providers import make_provider
from tests.support import wait_until


def test_faust_threads_never_keep_the_process_alive(fresh_settings) -> None:
    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    processor = SandboxProcessor(s, make_provider(s))
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: processor.status, timeout=90, what="partitions owned")
        workers = [t for t in threading.enumerate() if isinstance(t, mode.threads.WorkerThread)]
        assert workers, "faust runs its consumer on a mode worker thread"
        assert all(t.daemon for t in workers), [t.name for t in workers if not t.daemon]
    finally:
        processor.stop()
        thread.join(timeout=90)
    assert not thread.is_alive(), "the processor did not stop"
