"""Live-tail latency: time from `producer.send` to the event arriving at an SSE client, at a given
rate, next to a raw confluent-kafka consumer reading the same records in the same run.

The producer, the raw consumer and the SSE client each run in their own process: in one process
their threads took turns on one GIL, and each reader's clock stopped while another parsed (the
raw consumer's p99 counted the SSE client's parsing, and the other way round).

usage: python bench/sse_latency.py [--rate 2000] [--seconds 10]
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from confluent_kafka import TopicPartition
from httpx_sse import connect_sse

from astraforge.config import Settings
from astraforge.db import connect
from astraforge.kafka import high_watermarks, partition_for, poll_batch, reader
from astraforge.keys import create_key
from astraforge.producers.kafka import EventProducer
from astraforge.projections.postgres import create_schema
from astraforge.schemas import Envelope, default_codec
from bench.common import bench_settings, cpu_seconds, drop, pct, report, table
from tests.support import auth, free_port, wait_until

STREAM = "latency"


def stamped(n: int, tenant: str) -> Envelope:
    payload = {"message_id": str(n), "role": "agent", "text": str(time.time_ns())}
    return Envelope(type="chat.message", stream_id=STREAM, tenant_id=tenant, actor="bench", payload=payload)


def latency_ms(text: str) -> float:
    return (time.time_ns() - int(text)) / 1e6


@dataclass(frozen=True)
class Services:
    url: str
    api_pid: int
    projector_pid: int


@contextmanager
def services(settings) -> Iterator[Services]:
    """The API and the projector as separate processes, as deployed (no shared GIL with the bench)."""
    port = free_port()
    env = {**os.environ, **settings.as_env()}
    cli = [sys.executable, "-m", "astraforge.cli"]
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # no access log lines
    procs = [
        subprocess.Popen([*cli, "projections", "run"], **quiet),
        subprocess.Popen([*cli, "api", "--port", str(port)], **quiet),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), timeout=60, what="API")
        yield Services(url, procs[1].pid, procs[0].pid)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def raw_consumer(env: dict[str, str], total: int, ready, results) -> None:
    """Reads the stream's partition with a plain consumer; puts ``("raw", latencies)``."""
    os.environ.update(env)
    settings = Settings()
    codec = default_codec()
    consumer = reader(settings, **{"enable.partition.eof": False})
    partition = partition_for(STREAM, settings.topic_partitions)
    start = high_watermarks(consumer, settings.events_topic, 5)[partition]
    consumer.assign([TopicPartition(settings.events_topic, partition, start)])
    ready.wait()
    lat: list[float] = []
    while len(lat) < total:
        for msg in poll_batch(consumer, 500, timeout=0.1):
            if not msg.error():
                lat.append(latency_ms(codec.decode(msg.value()).payload["text"]))
    consumer.close()
    results.put(("raw", lat))


def sse_client(url: str, key: str, total: int, ready, results) -> None:
    """Reads the stream over SSE from the API; puts ``("sse", latencies)``."""
    lat: list[float] = []
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=60)) as client,
        connect_sse(client, "GET", f"{url}/v1/streams/{STREAM}/events/sse", headers=auth(key)) as source,
    ):
        events = source.iter_sse()
        next(e for e in events if e.data)  # the replayed first record
        ready.wait()
        for event in events:
            if event.data:
                lat.append(latency_ms(event.json()["payload"]["text"]))
                if len(lat) == total:
                    break
    results.put(("sse", lat))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    total = int(args.rate * args.seconds)
    settings = bench_settings()
    tenant = "bench"
    key = create_key(settings, tenant)
    with connect(settings) as conn:
        create_schema(conn, settings.projection_schema)
    producer = EventProducer(settings)
    producer.append(stamped(-1, tenant))  # the stream exists before the clients connect
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that runs librdkafka threads
    ready = spawn.Barrier(3)
    results = spawn.Queue()
    try:
        with services(settings) as running:
            readers = [
                spawn.Process(target=raw_consumer, args=(settings.as_env(), total, ready, results)),
                spawn.Process(target=sse_client, args=(running.url, key, total, ready, results)),
            ]
            for proc in readers:
                proc.start()
            ready.wait()
            api_cpu, projector_cpu = cpu_seconds(running.api_pid), cpu_seconds(running.projector_pid)
            interval = 1 / args.rate
            started = time.perf_counter()
            for n in range(total):
                delay = started + n * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                producer.send(stamped(n, tenant))
                producer.poll(0)
            producer.flush()
            latencies = dict(results.get(timeout=120) for _ in readers)
            for proc in readers:
                proc.join(timeout=30)
            api_cpu = cpu_seconds(running.api_pid) - api_cpu
            projector_cpu = cpu_seconds(running.projector_pid) - projector_cpu
        raw_lat, sse_lat = latencies["raw"], latencies["sse"]
        rows = [("path", "p50 ms", "p99 ms", "max ms", "events")]
        for name, values in (("raw Kafka consumer", raw_lat), ("AstraForge SSE (API live tail)", sse_lat)):
            rows.append(
                (name, f"{pct(values, 50):.2f}", f"{pct(values, 99):.2f}", f"{max(values):.2f}", str(len(values)))
            )
        print(
            f"live-tail latency at {args.rate} ev/s for {args.seconds:.0f} s; API and projector as their own processes"
        )
        print(table(rows))
        print(f"SSE / raw p99 ratio: {pct(sse_lat, 99) / pct(raw_lat, 99):.2f}")
        report("sse.p99_ms", pct(sse_lat, 99))
        report("sse.raw_p99_ms", pct(raw_lat, 99))
        print(f"API CPU per live event: {api_cpu / total * 1e6:.1f} µs (live tail, SSE frames, its idle polls)")
        print(
            f"projector CPU per event: {projector_cpu / total * 1e6:.1f} µs (it shares the 2 cores with the live path)"
        )
    finally:
        drop(settings)


if __name__ == "__main__":
    main()
