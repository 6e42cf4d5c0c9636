"""Sandbox processor start-up against the size of the history: what the processor did before (decode
and fold every record of the events topic on each start) next to what it does now (restore its
partitions' live entries from its table's changelog, then read only the events after the table's
marks), in the same run. The first start of a deployment without a table reads the history once.

usage: python bench/processor_startup.py [--sandboxes N]   (4 records of history per ended sandbox)
"""

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astraforge.kafka import read_range
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.processors.sandboxes.state import evolve
from astraforge.producers.kafka import EventProducer
from astraforge.sandbox.providers import make_provider
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox
from bench.common import bench_settings, table


def history(n: int):
    """``n`` sandboxes that lived and ended: requested, provisioning, ready, terminated each."""
    for i in range(n):
        sid = f"sb-bench{i:024d}"
        spec = RequestedSandbox("img", idle_timeout_s=600, ttl_s=600).record()
        for state in ("requested", "provisioning", "ready", "terminated"):
            payload = {
                "state": state,
                "reason": None,
                "provider": "docker",
                "image": "img",
                "details": {},
                "spec": spec if state == "requested" else None,
            }
            yield Envelope(
                type=f"sandbox.{state}",
                stream_id=sid,
                tenant_id="bench",
                actor="bench",
                sandbox_id=sid,
                payload=payload,
            )


def old_rebuild(settings, codec) -> tuple[float, int]:
    began, folded, states = time.monotonic(), 0, {}
    for p in range(settings.topic_partitions):
        for msg in read_range(settings, settings.events_topic, p, 0, None):
            e = codec.decode(msg.value())
            if e.sandbox_id:
                states[e.sandbox_id] = evolve(states.get(e.sandbox_id), e)
                folded += 1
    return time.monotonic() - began, folded


def start(settings, provider, **kw) -> tuple[SandboxProcessor, threading.Thread, float]:
    began = time.monotonic()
    processor = SandboxProcessor(settings, provider, **kw)
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    while not processor.takeovers:
        time.sleep(0.01)
    return processor, thread, time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandboxes", type=int, default=25_000)
    n = parser.parse_args().sandboxes
    settings = bench_settings().model_copy(update={"warm_pools": [], "sandbox_provider": "docker"})
    provider = make_provider(settings)
    producer = EventProducer(settings, **{"linger.ms": 20})
    for e in history(n):
        producer.send(e)
    producer.flush(120)

    old_s, folded = old_rebuild(settings, producer.codec)
    first, thread, first_s = start(settings, provider, ended_grace_s=0)
    while first.states:  # ended sandboxes leave the table at the next tick
        time.sleep(0.1)
    first.stop()
    thread.join(60)
    again, thread, again_s = start(settings, provider)
    (took,) = again.takeovers
    again.stop()
    thread.join(60)
    print(
        table(
            [
                (
                    "history (records)",
                    "before: every start",
                    "first start (no table yet)",
                    "restart",
                    "restart: events read",
                ),
                (
                    str(folded),
                    f"{old_s:.2f}s",
                    f"{first_s:.2f}s",
                    f"{again_s:.2f}s (takeover {took['seconds']:.2f}s)",
                    str(took["events_read"]),
                ),
            ]
        )
    )


if __name__ == "__main__":
    main()
