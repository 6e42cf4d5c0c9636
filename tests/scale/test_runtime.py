"""The shared processor runtime on the real broker: two worker processes split the partitions; after
``kill -9`` of one, the other owns them all and continues from the table its peer left (restored from
the changelog), with no record counted twice."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka.admin import NewTopic

from astraforge.kafka import partition_for
from astraforge.producers.kafka import EventProducer
from astraforge.producers.topics import admin_client
from tests.support import cli_env, wait_until

PARTITIONS = 6


class Worker:
    def __init__(self, settings, topic: str, log: Path) -> None:
        self.log = log
        self.out = log.open("w")
        cmd = [sys.executable, "-m", "tests.scale.counter_worker", topic]
        self.proc = subprocess.Popen(cmd, env=cli_env(settings), stdout=self.out, stderr=subprocess.STDOUT)

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def owned(self) -> set[int] | None:
        assert self.proc.poll() is None, f"worker exited: {self.log.read_text()[-3000:]}"
        owned = [line["owned"] for line in self.lines() if "owned" in line]
        return set(owned[-1]) if owned else None

    def counts(self) -> dict[str, int]:
        return {line["key"]: line["n"] for line in self.lines() if "key" in line}

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.out.close()


def keys_over_partitions(per_partition: int) -> list[str]:
    keys: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(k) < per_partition for k in keys.values()):
        key = f"stream-{i}"
        if len(keys[partition_for(key, PARTITIONS)]) < per_partition:
            keys[partition_for(key, PARTITIONS)].append(key)
        i += 1
    return [k for ks in keys.values() for k in ks]


def test_two_workers_split_partitions_and_survive_kill_9(fresh_settings, tmp_path) -> None:
    s = fresh_settings.model_copy(update={"topic_partitions": PARTITIONS})
    topic = f"{s.topic_prefix}.counted"
    admin = admin_client(s)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
    producer = EventProducer(s)
    a = Worker(s, topic, tmp_path / "a.log")
    b = None
    try:
        wait_until(lambda: a.owned() == set(range(PARTITIONS)), timeout=60, what=f"a owns all: {a.log}")
        b = Worker(s, topic, tmp_path / "b.log")
        wait_until(
            lambda: (
                a.owned()
                and b.owned()
                and a.owned() | b.owned() == set(range(PARTITIONS))
                and not a.owned() & b.owned()
            ),
            timeout=60,
            what="partitions split",
        )
        a_partitions = a.owned()
        keys = keys_over_partitions(2)
        for _ in range(5):
            for key in keys:
                producer.send_raw(topic, key.encode(), b"x")
        producer.flush()
        both = lambda: {**a.counts(), **b.counts()}  # noqa: E731
        wait_until(lambda: both() == dict.fromkeys(keys, 5), timeout=60, what="every record counted once")
        a_keys = {k for k in keys if partition_for(k, PARTITIONS) in a_partitions}
        assert a_keys and set(a.counts()) == a_keys, "a counted exactly the keys of its partitions"

        killed = time.monotonic()
        a.kill9()
        wait_until(lambda: b.owned() == set(range(PARTITIONS)), timeout=60, what="b takes a's partitions")
        print(f"failover after kill -9: {time.monotonic() - killed:.1f}s")
        for key in keys:
            producer.send_raw(topic, key.encode(), b"x")
        producer.flush()
        # 6, not 1: b continued from the counts a left in the table (restored from the changelog)
        wait_until(lambda: b.counts() == dict.fromkeys(keys, 6), timeout=60, what=f"b continues a's counts: {b.log}")
    finally:
        a.stop()
        if b:
            b.stop()
