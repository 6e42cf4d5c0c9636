"""A processor that is told to stop ends, and so does the process around it: faust's stop does not
return when it comes mid-rebalance, and mode ran faust's consumer on a non-daemon thread, so a test
run that had passed (or a processor sent SIGTERM) hung at interpreter exit."""

import gc
import threading
import weakref

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
        wait_until(lambda: processor.ownership.status, timeout=90, what="partitions owned")
        workers = [t for t in threading.enumerate() if isinstance(t, mode.threads.WorkerThread)]
        assert workers, "faust runs its consumer on a mode worker thread"
        assert all(t.daemon for t in workers), [t.name for t in workers if not t.daemon]
    finally:
        processor.stop()
        thread.join(timeout=90)
    assert not thread.is_alive(), "the processor did not stop"


def test_a_closed_processor_is_freed_with_every_client_it_held(fresh_settings) -> None:
    """The platform and every test run in one process: a processor that outlives its use keeps its Kafka
    clients, PostgreSQL connections and event loops (a CI run reached 1,024 fds, past which ``select()``
    fails every bwrap create). mode's signals kept each runtime's hooks — and through them the processor
    — in a registry for the life of the process."""
    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    processor = SandboxProcessor(s, make_provider(s))
    processor.close()
    processor.close()  # idempotent
    freed, producer = weakref.ref(processor), weakref.ref(processor.producer)
    del processor
    gc.collect()
    assert freed() is None and producer() is None, "something still holds a closed processor"
