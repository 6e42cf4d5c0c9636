"""Every performance budget of the design (DESIGN.md §8, issue 7) next to what this ``make bench``
measured, read from the measures the benches reported (``bench.common.report``).

usage: python bench/budgets.py RESULTS_FILE
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table

Measures = dict[str, float]
# (budget, what was measured, met?) — each reads the measures it needs; a missing one is "not measured"
BUDGETS: list[tuple[str, Callable[[Measures], str], Callable[[Measures], bool]]] = [
    (
        "ingest end to end >= 25k ev/s",
        lambda m: f"{m['ingest.e2e_per_s']:,.0f} ev/s",
        lambda m: m["ingest.e2e_per_s"] >= 25_000,
    ),
    (
        "ingest end to end >= 0.3x the raw producer",
        lambda m: f"{m['ingest.e2e_per_s'] / m['ingest.raw_per_s']:.2f}x (raw {m['ingest.raw_per_s']:,.0f} ev/s)",
        lambda m: m["ingest.e2e_per_s"] >= 0.3 * m["ingest.raw_per_s"],
    ),
    (
        "SSE live-tail p99 <= 50 ms at 2k ev/s",
        lambda m: f"{m['sse.p99_ms']:.1f} ms",
        lambda m: m["sse.p99_ms"] <= 50,
    ),
    (
        "SSE live-tail p99 <= 2x a raw consumer's",
        lambda m: f"{m['sse.p99_ms'] / m['sse.raw_p99_ms']:.2f}x (raw {m['sse.raw_p99_ms']:.1f} ms)",
        lambda m: m["sse.p99_ms"] <= 2 * m["sse.raw_p99_ms"],
    ),
    (
        "replay of a 100k-record stream to one SSE client >= 50k ev/s",
        lambda m: f"{m['replay.sse_per_s']:,.0f} ev/s",
        lambda m: m["replay.sse_per_s"] >= 50_000,
    ),
    (
        "exec round trip via the API p50 <= 8 ms, every byte recorded",
        lambda m: f"{m['sandbox.exec_p50_ms']:.1f} ms",
        lambda m: m["sandbox.exec_p50_ms"] <= 8,
    ),
    (
        "warm-pool create until ready p50 <= 15 ms",
        lambda m: f"{m['sandbox.warm_p50_ms']:.1f} ms",
        lambda m: m["sandbox.warm_p50_ms"] <= 15,
    ),
    (
        "cold create <= 1.3x a raw hardened docker run",
        lambda m: f"{m['sandbox.cold_p50_ms'] / m['sandbox.raw_run_p50_ms']:.2f}x ({m['sandbox.cold_p50_ms']:.0f} ms)",
        lambda m: m["sandbox.cold_p50_ms"] <= 1.3 * m["sandbox.raw_run_p50_ms"],
    ),
    (
        ">= 200 idle sandboxes on 24 GB",
        lambda m: f"{24 * 1024 / m['sandbox.idle_mib']:,.0f} fit at {m['sandbox.idle_mib']:.1f} MiB each",
        lambda m: 24 * 1024 / m["sandbox.idle_mib"] >= 200,
    ),
    (
        "200 live sandboxes: exec p50 within 1.2x of one sandbox's",
        lambda m: f"{m['live.exec_p50_ms'] / m['sandbox.exec_p50_ms']:.2f}x ({m['live.exec_p50_ms']:.1f} ms)",
        lambda m: m["live.exec_p50_ms"] <= 1.2 * m["sandbox.exec_p50_ms"],
    ),
    (
        "200 live sandboxes: >= 10 cold creates/s from 8 clients",
        lambda m: f"{m['live.creates_per_s']:.1f}/s",
        lambda m: m["live.creates_per_s"] >= 10,
    ),
]


def main() -> None:
    measures: Measures = {}
    path = Path(sys.argv[1])
    for line in path.read_text().splitlines() if path.exists() else []:
        item = json.loads(line)
        measures[item["measure"]] = item["value"]
    rows = [("budget", "measured", "met")]
    for budget, shown, met in BUDGETS:
        try:
            rows.append((budget, shown(measures), "yes" if met(measures) else "NO"))
        except KeyError:
            rows.append((budget, "not measured", "-"))
    print("budgets (this machine, this run; on a shared machine read them with its load)")
    print(table(rows))


if __name__ == "__main__":
    main()
