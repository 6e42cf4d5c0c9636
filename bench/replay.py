"""Replay throughput: one stream of N records read back whole, three ways, in one run:
a raw confluent-kafka read of its partition, REST paging (``GET /events?after=&limit=1000``), and
one SSE client (``GET /events/sse``, replay from the projection). API and projector run as their
own processes, as deployed.

usage: python bench/replay.py [--events 100000]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from confluent_kafka import TopicPartition

from astraforge.kafka import partition_for, poll_batch, reader
from astraforge.keys import create_key
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope
from bench.common import bench_settings, cpu_seconds, drop, report, table
from bench.ingest import wait_for_rows
from bench.sse_latency import services
from tests.support import auth

STREAM = "replay"


def record(n: int, tenant: str) -> Envelope:
    payload = {"command_id": "c1", "stream": "stdout", "seq": n, "data": b"line of output %d\n" % n, "artifact": None}
    return Envelope(type="exec.output", stream_id=STREAM, tenant_id=tenant, actor="bench", payload=payload)


def raw_read(settings, n: int) -> float:
    """Seconds for a plain consumer to read the stream's partition from offset 0 to its n-th record."""
    consumer = reader(settings, **{"enable.partition.eof": False})
    try:
        started = time.perf_counter()
        consumer.assign([TopicPartition(settings.events_topic, partition_for(STREAM, settings.topic_partitions), 0)])
        seen = 0
        while seen < n:
            seen += sum(1 for m in poll_batch(consumer, 5000, timeout=1) if not m.error())
        return time.perf_counter() - started
    finally:
        consumer.close()


def rest_read(url: str, key: str, n: int) -> float:
    with httpx.Client(base_url=url, headers=auth(key), timeout=60) as client:
        started = time.perf_counter()
        seen, after = 0, -1
        while seen < n:
            page = client.get(f"/v1/streams/{STREAM}/events", params={"after": after, "limit": 1000}).json()
            seen += len(page["items"])
            after = page["items"][-1]["offset"]
        return time.perf_counter() - started


def sse_read(url: str, key: str, n: int) -> float:
    """Seconds from the request to the n-th event's last byte (the client only counts ``id:`` lines)."""
    with httpx.Client(timeout=httpx.Timeout(60, read=60)) as client:
        started = time.perf_counter()
        with client.stream("GET", f"{url}/v1/streams/{STREAM}/events/sse", headers=auth(key)) as response:
            response.raise_for_status()
            seen = 0
            for line in response.iter_lines():
                if line.startswith("id:"):
                    seen += 1
                    if seen == n:
                        return time.perf_counter() - started
    raise AssertionError(f"the SSE stream ended after {seen} of {n} events")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    n = parser.parse_args().events
    settings = bench_settings()
    tenant = "bench"
    key = create_key(settings, tenant)
    try:
        producer = EventProducer(settings, **{"linger.ms": 5})
        for i in range(n):
            producer.send(record(i, tenant))
        producer.flush()
        with services(settings) as running:
            wait_for_rows(settings, n)
            measured = []
            for name, read in (
                ("raw Kafka read (no decode)", lambda: raw_read(settings, n)),
                ("REST paging, 1000 a page", lambda: rest_read(running.url, key, n)),
                ("SSE replay", lambda: sse_read(running.url, key, n)),
            ):
                api_cpu = cpu_seconds(running.api_pid)
                seconds = read()
                measured.append((name, seconds, cpu_seconds(running.api_pid) - api_cpu))
        raw = measured[0][1]
        rows = [("replay of one stream", "events/s", "vs raw read", "API CPU µs/event")]
        for name, seconds, api_cpu in measured:
            cpu = f"{api_cpu / n * 1e6:.1f}" if name != measured[0][0] else "-"
            rows.append((name, f"{n / seconds:,.0f}", f"{raw / seconds:.2f}", cpu))
        report("replay.sse_per_s", n / measured[2][1])
        print(f"replay, {n:,} exec.output records in one stream; API and projector as their own processes")
        print(table(rows))
    finally:
        drop(settings)


if __name__ == "__main__":
    main()
