"""A minimal processor on the shared runtime, run as a subprocess by test_runtime.py.

It counts records per key in a table co-partitioned with its source topic, idempotently (a record at
or below the offset already counted is skipped), and prints one JSON line per count and per change
of ownership, so the test can see who owns what and what the table held.
"""

import json
import signal
import sys
import threading

from astraforge.config import get_settings
from astraforge.processors.runtime import Runtime


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def main(topic: str) -> None:
    runtime = Runtime(get_settings(), "counter", topic)
    counts = runtime.table("counts")

    def owned(partitions) -> None:
        say(owned=sorted(runtime.owned))  # after a revocation: what is left; after an assignment: all

    runtime.on_assigned(owned)
    runtime.on_revoked(owned)

    @runtime.app.agent(runtime.topic)
    async def count(stream):
        async for event in stream.events():
            key, partition, offset = event.key.decode(), event.message.partition, event.message.offset
            seen = counts.data.data.get(key) or {"n": 0, "offset": -1}
            if offset <= seen["offset"]:  # redelivered: already counted
                continue
            value = {"n": seen["n"] + 1, "offset": offset}
            runtime.put(counts, partition, key, value)
            say(key=key, partition=partition, **value)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    runtime.start()
    done.wait()
    runtime.stop()


if __name__ == "__main__":
    main(sys.argv[1])
