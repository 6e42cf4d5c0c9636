"""The web UI under load, in Debian's Chromium (web/e2e/measure.mjs): first contentful paint of the
runs list with 1,000 runs against a static page holding the same table served by the same server,
and a 100,000-record timeline (the audit view of one stream): its load against a raw SSE read of
it, and frame times while scrolling against a static page of 5,000 rows of the same text.

The JS heap the 100k-record timeline holds is read after a forced GC, against the same page before
the stream is opened; `--dist` measures another build of the UI (e.g. one of main's, for a before/after).

`--output-bytes` pads each record's output to that size (the platform records chunks up to 64 KiB).

usage: python bench/web.py [--runs 1000] [--records 100000] [--output-bytes 0] [--dist <built web dir>]
"""

import argparse
import html
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astraforge.keys import create_key
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope
from bench.common import bench_settings, drop, table
from bench.ingest import wait_for_rows
from bench.replay import record, sse_read
from bench.sse_latency import services

ROOT = Path(__file__).resolve().parent.parent
STATES = ["awaiting_review", "merged", "running", "failed", "rejected"]


def web_sh(command: str) -> str:
    done = subprocess.run(["bash", str(ROOT / "deploy/local/web.sh"), command], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout.strip().splitlines()[-1]


def run_record(n: int, tenant: str) -> Envelope:
    state = STATES[n % len(STATES)]
    payload = {
        "state": state,
        "attempt": 1,
        "reason": None,
        "title": f"Fix flaky test number {n}",
        "agent": "script",
        "sandbox_id": None,
        "repository": f"https://git.example/team/repo-{n % 7}.git",
        "spec": "...",
    }
    run_id = f"run-bench-{n:05d}"
    return Envelope(type=f"run.{state}", stream_id=run_id, tenant_id=tenant, actor="bench", payload=payload)


def frames(f: dict) -> str:
    return f"{f['p50']:.0f} / {f['p95']:.0f} / {f['max']:.0f} ms"


def padded(envelope: Envelope, size: int) -> Envelope:
    """The record with its output padded to `size` bytes (a bigger chunk, the same line first)."""
    data = envelope.payload["data"]
    if size > len(data):
        envelope.payload["data"] = data.rstrip(b"\n").ljust(size - 1, b".") + b"\n"
    return envelope


def mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def with_baseline(dist: Path, runs: int, into: Path) -> Path:
    """A copy of the built UI plus assets/baseline.html: the runs table as static HTML, no script."""
    shutil.copytree(dist, into, dirs_exist_ok=True)
    rows = "".join(
        f"<tr><td>Fix flaky test number {n}</td><td>{STATES[n % len(STATES)]}</td>"
        f"<td>{html.escape(f'https://git.example/team/repo-{n % 7}.git')}</td><td>1</td></tr>"
        for n in range(runs)
    )
    (into / "assets" / "baseline.html").write_text(f"<!doctype html><title>baseline</title><table>{rows}</table>")
    lines = "".join(
        f'<div style="height:24px;display:flex;gap:12px"><span>{n}</span><span>08:00:00.000</span>'
        f"<b>exec.output</b><span>line of output {n}</span></div>"
        for n in range(5000)
    )
    (into / "assets" / "baseline-scroll.html").write_text(
        '<!doctype html><title>baseline</title><div role="log" aria-label="Timeline" '
        f'style="height:520px;overflow:auto;font:12px monospace">{lines}</div>'
    )
    return into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--output-bytes", type=int, default=0, help="pad each record's output to this size")
    parser.add_argument("--dist", type=Path, help="a built UI to measure instead of this checkout's")
    args = parser.parse_args()
    chromium = web_sh("browser")
    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    settings = bench_settings()
    dist = args.dist or Path(web_sh("build"))
    settings = settings.model_copy(update={"web_dist": with_baseline(dist, args.runs, workdir)})
    tenant = "bench"
    key = create_key(settings, tenant)
    try:
        producer = EventProducer(settings, **{"linger.ms": 5})
        for n in range(args.runs):
            producer.send(run_record(n, tenant))
        for n in range(args.records):
            producer.send(padded(record(n, tenant), args.output_bytes))
        producer.flush()
        with services(settings) as running:
            wait_for_rows(settings, args.runs + args.records)
            raw_sse = sse_read(running.url, key, args.records)
            env = {"BASE_URL": running.url, "API_KEY": key, "STREAM": "replay", "RECORDS": str(args.records),
                   "CHROMIUM": chromium, "ARTIFACTS": str(workdir / "shots"), "PATH": "/usr/bin:/bin"}  # fmt: skip
            done = subprocess.run(
                ["node", "e2e/measure.mjs"], cwd=ROOT / "web", env=env, capture_output=True, text=True, timeout=1800
            )
            if done.returncode:
                raise SystemExit(done.stderr)
            m = json.loads(done.stdout.strip().splitlines()[-1])
        fcp, base = m["fcpRunsListMs"], m["fcpBaselineMs"]
        load = m["timelineLoadMs"] / 1000
        wheel, jumps, still = m["wheel"], m["jumps"], m["staticWheel"]
        static = f"{frames(still)} static"
        held, empty = m["heapHeldBytes"], m["heapEmptyBytes"]
        rows = [
            ("measure", "value", "baseline", "ratio"),
            (f"FCP, runs list ({args.runs:,} runs)", f"{fcp:.0f} ms", f"{base:.0f} ms static", f"{fcp / base:.2f}"),
            ("runs list, first 100 rows shown", f"{m['firstPageRowsMs']:.0f} ms", "-", "-"),
            (f"timeline: {args.records:,} held", f"{load:.1f} s", f"{raw_sse:.1f} s raw SSE", f"{load / raw_sse:.2f}"),
            ("scroll 10 rows a frame: p50/p95/max", frames(wheel), static, f"{wheel['p50'] / still['p50']:.2f} (p50)"),
            ("scroll the run in 300 frames: same", frames(jumps), static, f"{jumps['p50'] / still['p50']:.2f} (p50)"),
            ("timeline rows in the DOM (most at once)", str(m["rowsInDomMax"]), f"{args.records:,} records", "-"),
            (f"JS heap, {args.records:,} held", mb(held), f"{mb(empty)} without them", f"+{mb(held - empty)}"),
            ("oldest record shown whole (after the scrolls)", f"{m['oldRecordMs']:.0f} ms", "-", "-"),
        ]
        print("web UI in headless Chromium; API and projector as their own processes")
        print(table(rows))
    finally:
        drop(settings)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
