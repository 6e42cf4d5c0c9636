"""Ingest throughput: events/s from our producer through Kafka into PostgreSQL, next to a raw
confluent-kafka producer writing the same bytes to the same broker in the same run.

usage: python bench/ingest.py [--events N]
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from confluent_kafka import Producer
from psycopg import sql

from astraforge.db import connect
from astraforge.kafka import client_config
from astraforge.producers.kafka import EventProducer
from astraforge.projections.postgres import Projector
from astraforge.schemas import Envelope, default_codec
from bench.common import bench_settings, cpu_of_command, cpu_seconds, drop, report, table


def event(n: int) -> Envelope:
    return Envelope(
        type="exec.output",
        stream_id=f"run-{n % 64}",
        tenant_id="bench",
        actor="sandbox",
        payload={"command_id": f"c{n % 64}", "stream": "stdout", "seq": n, "data": b"x" * 120, "artifact": None},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    n = parser.parse_args().events
    settings = bench_settings()
    codec = default_codec()
    try:
        # raw baseline: pre-encoded bytes, a plain producer with the same durability settings
        values = [(e.stream_id.encode(), codec.encode(e)) for e in map(event, range(n))]
        raw = Producer(client_config(settings, acks="all", **{"enable.idempotence": True, "linger.ms": 5}))
        warm_up(raw, f"{settings.topic_prefix}.commands", values[0])
        raw_cpu = time.process_time()
        started = time.perf_counter()
        for key, value in values:
            while True:
                try:
                    raw.produce(f"{settings.topic_prefix}.commands", value, key)
                    break
                except BufferError:
                    raw.poll(0.01)
        raw.flush()
        raw_rate = n / (time.perf_counter() - started)
        raw_cpu = time.process_time() - raw_cpu

        # ours, end to end: the projector runs as its own process (as deployed) while we produce
        projector = subprocess.Popen(
            [sys.executable, "-m", "astraforge.cli", "projections", "run"],
            env={**os.environ, **settings.as_env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_rows(settings, 0)
            producer = EventProducer(settings, **{"linger.ms": 5})
            warm_up(producer._producer, f"{settings.topic_prefix}.commands", values[0])
            projector_cpu, producer_cpu = cpu_seconds(projector.pid), time.process_time()
            postgres_cpu, kafka_cpu = cpu_of_command("postgres"), cpu_of_command("java")
            started = time.perf_counter()
            for i in range(n):
                producer.send(event(i))
            producer.flush()
            produced = time.perf_counter() - started
            producer_cpu = time.process_time() - producer_cpu
            wait_for_rows(settings, n)
            done = time.perf_counter()
            projector_cpu = cpu_seconds(projector.pid) - projector_cpu
            postgres_cpu, kafka_cpu = cpu_of_command("postgres") - postgres_cpu, cpu_of_command("java") - kafka_cpu
        finally:
            projector.terminate()
            projector.wait()
        e2e_rate = n / (done - started)

        # the projector alone, replaying the same records into a fresh schema
        alone = Projector(settings, schema=f"{settings.projection_schema}_alone")
        proj_started, proj_cpu = time.perf_counter(), time.process_time()
        alone.run_until_caught_up()
        proj_rate = alone.projected / (time.perf_counter() - proj_started)
        proj_cpu = time.process_time() - proj_cpu

        def us(cpu: float) -> str:
            return f"{cpu / n * 1e6:.1f}"

        rows = [
            ("measure", "events/s", "vs raw producer", "CPU µs/event"),
            ("raw confluent-kafka producer (same bytes)", f"{raw_rate:,.0f}", "1.00", us(raw_cpu)),
            (
                "our producer (build + encode + produce)",
                f"{n / produced:,.0f}",
                f"{n / produced / raw_rate:.2f}",
                us(producer_cpu),
            ),
            ("projector alone (Kafka -> PostgreSQL)", f"{proj_rate:,.0f}", "-", us(proj_cpu)),
            (
                "end to end (produce -> projected rows)",
                f"{e2e_rate:,.0f}",
                f"{e2e_rate / raw_rate:.2f}",
                f"projector {us(projector_cpu)}",
            ),
        ]
        report("ingest.raw_per_s", raw_rate)
        report("ingest.e2e_per_s", e2e_rate)
        print(f"ingest, {n:,} events of ~{len(values[0][1])} bytes, {settings.topic_partitions} partitions")
        print(table(rows))
        print(
            f"end to end, CPU µs per event: producer {us(producer_cpu)}, projector {us(projector_cpu)}, "
            f"PostgreSQL {us(postgres_cpu)}, Kafka broker {us(kafka_cpu)} (host-wide; {os.cpu_count()} cores)"
        )
    finally:
        drop(settings)
        drop(settings.model_copy(update={"projection_schema": f"{settings.projection_schema}_alone"}))


def warm_up(producer: Producer, topic: str, record: tuple[bytes, bytes]) -> None:
    """Connected, with its idempotent producer id, before the clock starts (the first record waits
    for both: up to a second while the broker's coordinator loads, which once read as a 3x slower
    raw baseline)."""
    producer.produce(topic, record[1], record[0])
    producer.flush(30)


def wait_for_rows(settings, count: int, timeout: float = 300) -> None:
    """Until the projection schema exists and holds ``count`` events. Asks the streams table (its
    counts commit with the rows): a count(*) over events 50 times a second took a good share of the
    CPU the projector and PostgreSQL were being measured on."""
    query = sql.SQL("SELECT coalesce(sum(event_count), 0) AS n FROM {}.streams").format(
        sql.Identifier(settings.projection_schema)
    )
    deadline = time.monotonic() + timeout
    conn = None
    try:
        while time.monotonic() < deadline:
            try:
                conn = conn or connect(settings, autocommit=True)
                if conn.execute(query).fetchone()["n"] >= count:
                    return
            except psycopg.Error:
                pass
            time.sleep(0.02)
    finally:
        if conn is not None:
            conn.close()
    raise TimeoutError(f"projection did not reach {count} rows")


if __name__ == "__main__":
    main()
