"""Many live sandboxes at once (``bench/sandbox.py --live 200``): cold creates from concurrent
clients (creates per second, each create's latency), then exec round trips with all of them live,
next to the one-sandbox exec figure of the same run, and the host memory each one holds.

Host memory is MemAvailable before the creates minus after, per sandbox: on a shared machine
other work moves it too, so it is a rough figure (the cgroup figure of the main bench is exact).
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import cpu_seconds, host_cpu_seconds, pct

COLD = {"profile": {"memory_mb": 512}}  # a profile override never claims the warm pool


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def create_all(client: Callable[[], httpx.Client], n: int, clients: int) -> tuple[list[str], list[float], float]:
    """``n`` cold creates (each answered once ready) from ``clients`` concurrent clients, each with
    its own connection: the ids, each create's seconds, and the wall-clock seconds of them all."""
    per_client = [n // clients + (i < n % clients) for i in range(clients)]

    def run(count: int) -> list[tuple[str, float]]:
        done = []
        with client() as http:
            for _ in range(count):
                t = time.perf_counter()
                r = http.post("/v1/sandboxes", json=COLD)
                assert r.status_code == 201 and r.json()["state"] == "ready", r.text
                done.append((r.json()["id"], time.perf_counter() - t))
        return done

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for part in pool.map(run, per_client) for x in part]
    return [sid for sid, _ in results], [s for _, s in results], time.perf_counter() - began


def exec_round_trips(http: httpx.Client, sandbox_id: str, n: int) -> list[float]:
    took = []
    for _ in range(n):
        t = time.perf_counter()
        r = http.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"command": ["true"]})
        took.append(time.perf_counter() - t)
        assert r.json()["exit_code"] == 0, r.text
    return took


def measure(
    client: Callable[[], httpx.Client],
    n: int,
    clients: int,
    execs: int,
    one_p50: float,
    raw: tuple[str, Callable[[int, int], tuple[list[float], float]]],
    platform_pids: list[int],
) -> tuple[list, list, dict[str, float]]:
    """Rows for the results table (measure, p50 ms, p99 ms, ratio), the sandboxes made and the
    measures the budgets read (``live.*``, see bench/budgets.py). ``raw``:
    the name and runner of the raw concurrent baseline (``bench/raw_starts.py``), measured first
    with the same ``n`` and ``clients``, the platform's creates per second next to it. CPU per
    create: the platform's processes (``platform_pids``: API, processor, projector) and the whole
    host (everything else running then counts too: on a shared machine, a rough figure)."""
    raw_name, raw_run = raw
    host_before = host_cpu_seconds()
    raw_took, raw_wall = raw_run(n, clients)
    raw_host_cpu = host_cpu_seconds() - host_before
    before = mem_available()
    ours_before, host_before = sum(cpu_seconds(pid) for pid in platform_pids), host_cpu_seconds()
    made, latencies, wall = create_all(client, n, clients)
    ours_cpu = sum(cpu_seconds(pid) for pid in platform_pids) - ours_before
    host_cpu = host_cpu_seconds() - host_before
    per_sandbox = (before - mem_available()) / n
    with client() as http:
        live = exec_round_trips(http, made[0], execs)
    rows = [
        (
            f"raw {raw_name}, {n} from {clients} threads",
            f"{pct(raw_took, 50) * 1000:.1f}",
            f"{pct(raw_took, 99) * 1000:.1f}",
            f"{n / raw_wall:.1f}/s",
        ),
        (
            f"cold create, {n} from {clients} clients",
            f"{pct(latencies, 50) * 1000:.1f}",
            f"{pct(latencies, 99) * 1000:.1f}",
            f"{n / wall:.1f}/s = {raw_wall / wall:.2f} of raw",
        ),
        (
            "CPU per create, ms: raw host; ours host (of it API+processor+projector)",
            f"{raw_host_cpu / n * 1000:.0f}",
            f"{host_cpu / n * 1000:.0f} ({ours_cpu / n * 1000:.0f})",
            "",
        ),
        (
            f"exec true via API, {n} live",
            f"{pct(live, 50) * 1000:.1f}",
            f"{pct(live, 99) * 1000:.1f}",
            f"{pct(live, 50) / one_p50:.2f} of 1 live",
        ),
        ("host memory per live sandbox (MemAvailable)", f"{per_sandbox / 2**20:.1f} MiB", "", ""),
    ]
    return rows, made, {"exec_p50_ms": pct(live, 50) * 1000, "creates_per_s": n / wall}
