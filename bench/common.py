"""Shared bench helpers: isolated settings (own topics + schema), percentiles, a results table."""

import json
import os
import secrets
import statistics
from pathlib import Path

from astraforge.config import Settings
from astraforge.db import connect
from astraforge.producers.topics import ensure_topics
from astraforge.projections.postgres import drop_schema


def bench_settings(partitions: int = 6) -> Settings:
    tag = secrets.token_hex(4)
    s = Settings(topic_prefix=f"bench-{tag}", projection_schema=f"bench_{tag}", topic_partitions=partitions)
    ensure_topics(s)
    return s


def drop(settings: Settings) -> None:
    with connect(settings, autocommit=True) as conn:
        drop_schema(conn, settings.projection_schema)


def pct(values: list[float], p: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(p * 10) - 1]


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc): on a shared machine the CPU a
    path costs says more than its wall-clock rate."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_cpu_seconds() -> float:
    """CPU seconds the whole host has used so far, every core and process (from /proc/stat; idle and
    iowait left out): the cost of work spread over short-lived processes (runc, bwrap, unshare)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cpu_of_command(name: str) -> float:
    """CPU seconds used so far by every process whose command is ``name`` (e.g. the PostgreSQL
    server's processes, the Kafka broker's ``java``): where an end-to-end path's CPU went besides
    our own processes (host-wide: anything else using them at the time counts too)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if comm == name:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def report(measure: str, value: float) -> None:
    """Keep a measure for ``bench/budgets.py`` (``make bench`` prints every budget against the
    measures at its end); a bench run on its own reports nowhere."""
    results = os.environ.get("ASTRAFORGE_BENCH_RESULTS")
    if results:
        with open(results, "a") as f:
            f.write(json.dumps({"measure": measure, "value": value}) + "\n")
