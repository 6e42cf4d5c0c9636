"""Sandbox create and exec through the whole platform (API -> Kafka -> processor -> docker ->
Kafka -> API), next to raw docker measured in the same run.

  cold create:  POST /v1/sandboxes (answers once sandbox.ready is on the stream)  vs  hardened `docker run -d`
  exec:         POST /v1/sandboxes/{id}/exec `true`, every byte recorded       vs  `docker exec` (CLI, docker-py)
                (also with a file another holder leased: the lease guard's fingerprints around it)
  idle:         N idle sandboxes, memory per sandbox (cgroup usage)

  live:         with --live N: N cold creates from 8 clients (creates/s) next to N raw starts from 8
                threads (bench/raw_starts.py), then exec with N live vs 1
                (bench/live_sandboxes.py; off by default, so `make bench` stays short)

  --provider bwrap: the platform's sandboxes are bubblewrap ones (the raw baselines stay docker's;
                the idle memory figure is docker's cgroup usage, so it is left out)

usage: python bench/sandbox.py [--creates 20] [--execs 200] [--idle 20] [--live 200] [--provider docker|bwrap]
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker
import httpx

from astraforge.keys import create_key
from astraforge.sandbox.providers import make_provider
from bench import create_breakdown, exec_breakdown, live_sandboxes, raw_starts
from bench.common import bench_settings, drop, pct, report, table
from tests.support import auth, free_port, wait_until

IMAGE = "astraforge/sandbox:bookworm"
HARDENED = {
    "read_only": True, "user": "1000:1000", "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
    "network_mode": "none", "pids_limit": 256, "mem_limit": "512m", "init": True, "detach": True,
    "tmpfs": {"/workspace": "size=1024m", "/tmp": "size=256m", "/home/sandbox": "size=256m"},
}  # fmt: skip


def ms(samples: list[float]) -> tuple[str, str]:
    return f"{pct(samples, 50) * 1000:.1f}", f"{pct(samples, 99) * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--idle", type=int, default=20)
    parser.add_argument("--live", type=int, default=0, help="also measure N live sandboxes (e.g. 200)")
    parser.add_argument("--provider", choices=("docker", "bwrap"), default="docker")
    args = parser.parse_args()
    settings = bench_settings().model_copy(update={"sandbox_provider": args.provider})
    platform = make_provider(settings)  # to see the warm pool and clean up as the processor's provider does
    sock = settings.state_dir / "dockerd" / "docker.sock"
    client = docker.DockerClient(base_url=f"unix://{sock}")
    warm_size = args.creates
    env = {
        **os.environ,
        **settings.as_env(),
        "DOCKER_HOST": f"unix://{sock}",
        "ASTRAFORGE_WARM_POOLS": json.dumps([{"size": warm_size}]),
        "ASTRAFORGE_SANDBOX_PROVIDER": args.provider,
        # the bench tenant holds every sandbox it measures at once (a sandbox weighs its RAM + tmpfs caps)
        "ASTRAFORGE_QUOTA_SANDBOXES": "1000",
        "ASTRAFORGE_QUOTA_MEMORY_MB": str(1000 * 4096),
    }
    port = free_port()
    cli = [sys.executable, "-m", "astraforge.cli"]
    procs = [
        subprocess.Popen([*cli, *c], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for c in (["projections", "run"], ["processors", "sandboxes"], ["api", "--port", str(port)])
    ]
    url = f"http://127.0.0.1:{port}"
    key = create_key(settings, "bench")
    rows = [("measure", "p50 ms", "p99 ms", "vs raw p50")]
    try:
        wait_until(lambda: _healthy(url), timeout=60, what="API")
        http = httpx.Client(base_url=url, headers=auth(key), timeout=120)
        http.post("/v1/sandboxes", json={}).raise_for_status()  # warm-up: image cache, first connections

        raw = []
        for _ in range(args.creates):
            t = time.perf_counter()
            c = client.containers.run(IMAGE, ["sleep", "infinity"], **HARDENED)
            raw.append(time.perf_counter() - t)
            c.remove(force=True)
        ours, warm, sandboxes = [], [], []
        for _ in range(args.creates):  # a profile override never claims the warm pool: always cold
            t = time.perf_counter()
            r = http.post("/v1/sandboxes", json={"profile": {"memory_mb": 512}})
            ours.append(time.perf_counter() - t)
            assert r.json().get("state") == "ready", r.text
            sandboxes.append(r.json()["id"])
        warm_ids = lambda: [i for i in platform.list_ids() if i.startswith("warm")]  # noqa: E731
        wait_until(lambda: len(warm_ids()) >= warm_size, 120, what="pool")
        warm_calls = {}
        for _ in range(args.creates):
            t, sent = time.perf_counter(), time.time()
            r = http.post("/v1/sandboxes", json={})
            warm.append(time.perf_counter() - t)
            sandboxes.append(r.json()["id"])
            warm_calls[r.json()["id"]] = (sent, time.time())
        rows.append(("raw hardened docker run -d (docker-py)", *ms(raw), "1.00"))
        via = args.provider
        rows.append((f"cold create via API until ready ({via})", *ms(ours), f"{pct(ours, 50) / pct(raw, 50):.2f}"))
        rows.append((f"warm-pool create via API until ready ({via})", *ms(warm), f"{pct(warm, 50) / pct(raw, 50):.2f}"))

        target = client.containers.run(IMAGE, ["sleep", "infinity"], **HARDENED)
        cli_exec, py_exec = [], []
        for _ in range(max(args.execs // 4, 10)):
            t = time.perf_counter()
            subprocess.run(["docker", "-H", f"unix://{sock}", "exec", target.id, "true"], check=True)
            cli_exec.append(time.perf_counter() - t)
            t = time.perf_counter()
            target.exec_run(["true"])
            py_exec.append(time.perf_counter() - t)
        target.remove(force=True)
        api_exec, calls = [], {}
        for _ in range(args.execs):
            t, sent = time.perf_counter(), time.time()
            r = http.post(f"/v1/sandboxes/{sandboxes[0]}/exec", json={"command": ["true"]})
            api_exec.append(time.perf_counter() - t)
            assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
            calls[r.json()["command_id"]] = (sent, time.time())
        rows.append(("raw docker exec true (CLI)", *ms(cli_exec), "1.00"))
        rows.append(("raw docker exec true (docker-py)", *ms(py_exec), f"{pct(py_exec, 50) / pct(cli_exec, 50):.2f}"))
        ratio = f"{pct(api_exec, 50) / pct(cli_exec, 50):.2f}"
        rows.append((f"exec true via API (recorded, {via})", *ms(api_exec), ratio))
        guarded = _guarded_execs(http, sandboxes[0], args.execs)
        rows.append(("exec true via API, a file leased by another", *ms(guarded),
                     f"{pct(guarded, 50) / pct(cli_exec, 50):.2f}"))  # fmt: skip
        stage_rows = exec_breakdown.rows(exec_breakdown.stages(settings, sandboxes[0], calls))
        stage_rows += exec_breakdown.rows(create_breakdown.stages(settings, warm_calls), "warm create stage")

        live_measures: dict[str, float] = {}
        if args.live:
            if args.provider == "docker":
                runs = lambda n, c: raw_starts.docker_runs(client, IMAGE, HARDENED, n, c)  # noqa: E731
                raw_concurrent = ("hardened docker run -d", runs)
            else:
                runs = lambda n, c: raw_starts.bwrap_runs(settings.cache_dir / "rootfs-bookworm", n, c)  # noqa: E731
                raw_concurrent = ("bwrap start, same profile", runs)
            live_rows, made, live_measures = live_sandboxes.measure(
                lambda: httpx.Client(base_url=url, headers=auth(key), timeout=300),
                args.live,
                8,
                args.execs,
                pct(api_exec, 50),
                raw_concurrent,
                [proc.pid for proc in procs],
            )
            rows += live_rows
            sandboxes += made
        for _ in range(max(args.idle - len(sandboxes), 0)):
            sandboxes.append(http.post("/v1/sandboxes", json={}).json()["id"])
        print(
            f"sandbox bench: {args.creates} creates, {args.execs} execs, {len(sandboxes)} idle sandboxes "
            f"({args.provider})"
        )
        print(table(rows))
        print(table([("where an API exec's (and a warm create's) time goes", "p50 ms", "mean ms"), *stage_rows]))
        if args.provider == "docker":
            ours_now = client.containers.list(filters={"label": f"astraforge.namespace={settings.topic_prefix}"})
            usage = [c.stats(stream=False)["memory_stats"]["usage"] for c in ours_now[:40]]  # a sample: ~1 s each
            print(
                f"idle sandboxes: {len(ours_now)}, memory per sandbox p50 {pct(usage, 50) / 2**20:.1f} MiB, "
                f"max {max(usage) / 2**20:.1f} MiB (cgroup usage incl. page cache)"
            )
            # the design's budgets are docker's (bench/budgets.py)
            for measure, value in (("exec_p50_ms", pct(api_exec, 50) * 1000), ("warm_p50_ms", pct(warm, 50) * 1000),
                                   ("cold_p50_ms", pct(ours, 50) * 1000), ("raw_run_p50_ms", pct(raw, 50) * 1000),
                                   ("idle_mib", pct(usage, 50) / 2**20)):  # fmt: skip
                report(f"sandbox.{measure}", value)
            for measure, value in live_measures.items():
                report(f"live.{measure}", value)
        for sid in sandboxes:
            http.delete(f"/v1/sandboxes/{sid}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        mine = {"label": f"astraforge.namespace={settings.topic_prefix}"}
        for c in client.containers.list(all=True, sparse=True, filters=mine):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                c.remove(force=True)  # whatever the processor had not stopped yet (and its warm pool)
        if args.provider == "bwrap":
            for runtime_id in platform.list_ids():
                with contextlib.suppress(Exception):
                    platform.stop(runtime_id)
        drop(settings)


def _guarded_execs(http: httpx.Client, sandbox_id: str, n: int) -> list[float]:
    """Exec round trips of a caller who does not hold a 4 KiB file another holder leased: the lease
    guard fingerprints it before and after each command (processors/sandboxes/lease_guard.py)."""
    http.put(f"/v1/sandboxes/{sandbox_id}/files/leased.txt", content=b"x" * 4096).raise_for_status()
    lease = {"path": "/workspace/leased.txt", "holder": "other", "ttl_s": 3600}
    http.post(f"/v1/sandboxes/{sandbox_id}/leases", json=lease).raise_for_status()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        r = http.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"command": ["true"]})
        samples.append(time.perf_counter() - t)
        assert r.json()["exit_code"] == 0 and r.json()["error"] is None, r.text
    http.delete(f"/v1/sandboxes/{sandbox_id}/leases", params={"path": lease["path"], "holder": "other"})
    return samples


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
