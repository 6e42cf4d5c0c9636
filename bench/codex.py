"""A Codex session through the platform next to the same session in a raw `docker run`, measured in
the same run against the same scripted model server (tests/modelserver.py).

  platform: a sandbox granted the model gateway (as a run's), the prompt written and `codex exec`
            run through the API (POST /v1/sandboxes/{id}/exec; every byte recorded), each model
            request through the egress proxy (recorded, the key swapped in)
  raw:      `docker run --rm -i` of the same image and Codex command line, hardened alike, with
            host networking to reach the model server directly (no proxy, nothing recorded)

Each session runs STEPS commands (`true`), one per model turn, then a final message. Measured by the
model server's clock: Codex's start (exec or `docker run` sent → first model request), one agent
step (a model answer → the next request: Codex runs the command, the proxy carries the request),
and the whole session. The platform's sandbox exists before its sessions start (a run provisions
it once); the raw session's time includes its container's start.

Then whole runs (``--runs``): POST /v1/requests with agent codex (API → Kafka → run orchestrator →
sandbox processor: a cold sandbox, the repository cloned and copied in, Codex confined and started)
against the same Codex session in a raw `docker run`: a command (`true`), STEPS file changes
(apply_patch, each one followed on the platform by a workspace snapshot and a host-side diff,
``diff.captured``), a final message. Measured: request (or `docker run`) → the agent's first
command done (the model request that carries its output), one file-change step (answer → next
request), and the platform's diff capture per step (``diff.produced`` → ``diff.captured``, which
runs beside Codex, not in its way), the last as a ratio to the raw step.

usage: python bench/codex.py [--sessions 5] [--steps 5] [--runs 3]
"""

import argparse
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from astraforge.keys import create_key
from astraforge.processors.runs.executors.codex import PROMPT_PATH, codex_invocation
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox
from bench.common import bench_settings, drop, pct, table
from tests.modelserver import ModelServer, Turn, apply_patch, exec_command, message
from tests.support import auth, free_port, wait_until

IMAGE = "astraforge/sandbox:bookworm"
REPOS = Path(tempfile.gettempdir()) / "astraforge-bench-codex-repos"
PROMPT = "Run `true` a few times, then say done."
RAW = [
    "--rm",
    "-i",
    "--network",
    "host",
    "--read-only",
    "--user",
    "1000:1000",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--pids-limit",
    "256",
    "--memory",
    "1024m",
    "--tmpfs",
    "/workspace:size=1024m,uid=1000,gid=1000",
    "--tmpfs",
    "/tmp:size=256m,uid=1000,gid=1000",
    "--tmpfs",
    "/home/sandbox:size=256m,uid=1000,gid=1000",
    "-w",
    "/workspace",
]


def script(steps: int) -> list[Turn]:
    return [*(Turn((exec_command("true"),)) for _ in range(steps)), Turn((message("done"),))]


def timings(server: ModelServer, started: float, ended: float) -> tuple[float, list[float], float]:
    """(Codex start, each step, whole session) in seconds, by the model server's clock."""
    at = [r.at for r in server.requests]
    return at[0] - started, [b - a for a, b in itertools.pairwise(at)], ended - started


def file_script(steps: int) -> list[Turn]:
    """A command, ``steps`` file changes, a final message: a run's session."""
    patches = [f"*** Begin Patch\n*** Add File: step{i}.txt\n+step {i}\n*** End Patch\n" for i in range(steps)]
    return [Turn((exec_command("true"),)), *(Turn((apply_patch(p),)) for p in patches), Turn((message("done"),))]


def raw_session(docker: list[str], steps: int, turns: list[Turn] | None = None) -> tuple[float, list[float], float]:
    turns = turns or script(steps)
    with ModelServer(turns) as server:
        invocation = codex_invocation(PROMPT, "bench-raw", upstream=f"127.0.0.1:{server.port}")
        inner = invocation.argv[2]  # the prompt arrives on the container's stdin, into the prompt file
        shell = f'mkdir -p "$CODEX_HOME" && cat > {PROMPT_PATH} && {inner}'
        env = [arg for name, value in invocation.env.items() for arg in ("-e", f"{name}={value}")]
        started = time.perf_counter()
        done = subprocess.run(
            [*docker, "run", *RAW, *env, IMAGE, "/bin/sh", "-c", shell], input=PROMPT.encode(), capture_output=True
        )
        ended = time.perf_counter()
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(server.requests) == len(turns)
        return timings(server, started, ended)


def platform_run(http: httpx.Client, repo: Path, listener: socket.socket, steps: int) -> tuple:
    """One codex run from its request to awaiting_review: (request → first command done, each
    file-change step, each diff capture) in seconds."""
    with ModelServer(file_script(steps), listener=listener.dup()) as server:
        body = {"spec": PROMPT, "repository": str(repo), "agent": "codex", "writable_paths": []}
        started = time.perf_counter()
        r = http.post("/v1/requests", json=body)
        r.raise_for_status()
        run_id = r.json()["id"]
        wait_until(lambda: _run_state(http, run_id) == "awaiting_review", timeout=300, what=f"{run_id} for review")
        at = [q.at for q in server.requests]
    events = http.get(f"/v1/streams/{run_id}/events", params={"limit": 1000}).json()["items"]
    produced = {e["payload"]["step"]: e["occurred_at"] for e in events if e["type"] == "diff.produced"}
    captured = {e["payload"]["step"]: e["occurred_at"] for e in events if e["type"] == "diff.captured"}
    captures = [_seconds(captured[k]) - _seconds(v) for k, v in produced.items()]
    assert len(captures) == steps, (produced, captured)
    steps_s = [b - a for a, b in itertools.pairwise(at[1:])][:steps]
    return at[1] - started, steps_s, captures


def platform_session(http: httpx.Client, sid: str, listener: socket.socket, steps: int) -> tuple:
    with ModelServer(script(steps), listener=listener.dup()) as server:
        invocation = codex_invocation(PROMPT, f"bench-{secrets.token_hex(4)}")
        started = time.perf_counter()
        for path, content in invocation.files.items():
            http.put(f"/v1/sandboxes/{sid}/files/{path}", content=content).raise_for_status()
        body = {"command": invocation.argv, "env": invocation.env, "cwd": invocation.cwd, "timeout_sec": 300}
        result = http.post(f"/v1/sandboxes/{sid}/exec", json=body).json()
        ended = time.perf_counter()
        assert result["exit_code"] == 0, result["stderr"][-2000:]
        assert len(server.requests) == steps + 1
        return timings(server, started, ended)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    gateway = socket.create_server(("127.0.0.1", 0))  # held for the whole bench: the operator's gateway
    key_value = f"bench-key-{secrets.token_hex(8)}"
    settings = bench_settings().model_copy(
        update={
            "egress_platform_upstreams": {"model-gateway": f"127.0.0.1:{gateway.getsockname()[1]}"},
            "egress_credentials": {"model-gateway": f"Authorization: Bearer {key_value}"},
            "warm_pools": [],
            "repo_allowlist": {"*": [f"{REPOS}/*.git"]},
        }
    )
    repo = bench_repository()
    sock = settings.state_dir / "dockerd" / "docker.sock"
    docker = ["docker", "-H", f"unix://{sock}"]
    env = {**os.environ, **settings.as_env(), "DOCKER_HOST": f"unix://{sock}"}
    port = free_port()
    cli = [sys.executable, "-m", "astraforge.cli"]
    procs = [
        subprocess.Popen([*cli, *c], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for c in (
            ["projections", "run"],
            ["processors", "sandboxes"],
            ["processors", "runs"],
            ["api", "--port", str(port)],
        )
    ]
    tenant = "bench"
    key = create_key(settings, tenant)
    producer = EventProducer(settings)
    sid = f"sb-{secrets.token_hex(16)}"
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth(key), timeout=330)
        wait_until(lambda: _healthy(http), timeout=60, what="API")
        spec = RequestedSandbox(IMAGE, {"memory_mb": 1024}, platform_upstreams=("model-gateway",))
        producer.append_many(
            [
                Envelope(
                    type="sandbox.create",
                    stream_id=sid,
                    tenant_id=tenant,
                    actor="processor:runs",
                    sandbox_id=sid,
                    payload=spec.create_payload(),
                )
            ]
        )
        wait_until(lambda: _state(http, sid) == "ready", timeout=90, what="sandbox ready")
        raw_session(docker, 1)  # warm-up: page cache for the 300 MB binary, first connections
        platform_session(http, sid, gateway, 1)
        raw = [raw_session(docker, args.steps) for _ in range(args.sessions)]
        ours = [platform_session(http, sid, gateway, args.steps) for _ in range(args.sessions)]

        def row(what: str, pick) -> tuple[str, ...]:
            r, o = [v for s in raw for v in pick(s)], [v for s in ours for v in pick(s)]
            return (what, f"{pct(r, 50) * 1000:.0f}", f"{pct(o, 50) * 1000:.0f}", f"{pct(o, 50) / pct(r, 50):.2f}")

        rows = [
            ("measure (p50)", "raw docker run ms", "platform ms", "platform / raw"),
            row("Codex start to its first model request", lambda s: [s[0]]),
            row("one agent step (answer -> next request)", lambda s: s[1]),
            row("whole session", lambda s: [s[2]]),
        ]
        print(f"codex bench: {args.sessions} sessions of {args.steps} steps each, Codex 0.171.0 (docker)")
        print(table(rows))
        http.post(f"/v1/sandboxes/{sid}/stop")

        if args.runs:
            turns = file_script(args.steps)
            platform_run(http, repo, gateway, 1)  # warm-up: the orchestrator's first clone and consumer
            raw_runs = [raw_session(docker, args.steps, turns) for _ in range(args.runs)]
            runs = [platform_run(http, repo, gateway, args.steps) for _ in range(args.runs)]
            raw_first = [s[1][0] + s[0] for s in raw_runs]  # docker run -> the first command's output asked on
            raw_steps = [v for s in raw_runs for v in s[1][1 : args.steps + 1]]
            first, steps_s = [r[0] for r in runs], [v for r in runs for v in r[1]]
            captures = [v for r in runs for v in r[2]]
            rows = [
                ("measure (p50)", "raw docker run ms", "platform ms", "platform / raw"),
                _row("request -> the agent's first command done", raw_first, first),
                _row("one file-change step (answer -> next request)", raw_steps, steps_s),
                _row("diff capture per step, vs a raw step", raw_steps, captures),
            ]
            print(
                f"\ncodex runs: {args.runs} runs (request to awaiting_review) of 1 command + {args.steps} file changes"
            )
            print(table(rows))
    finally:
        producer.close()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        subprocess.run([*docker, "rm", "-f", f"af-{sid}"], capture_output=True)
        gateway.close()
        drop(settings)


def _row(what: str, raw: list[float], ours: list[float]) -> tuple[str, ...]:
    return (what, f"{pct(raw, 50) * 1000:.0f}", f"{pct(ours, 50) * 1000:.0f}", f"{pct(ours, 50) / pct(raw, 50):.2f}")


def _seconds(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()


def _run_state(http: httpx.Client, run_id: str) -> str | None:
    r = http.get(f"/v1/runs/{run_id}")
    state = r.json()["state"] if r.status_code == 200 else None
    if state in ("failed", "cancelled", "rejected"):
        raise RuntimeError(f"run {run_id} {state}: {r.json().get('reason')}")
    return state


def bench_repository() -> Path:
    """A bare repository with a small project, for the runs."""
    work = REPOS / "calc-work"
    shutil.rmtree(REPOS, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b"}
    env["GIT_COMMITTER_EMAIL"] = "b@b"
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "initial"]):
        subprocess.run(["git", *argv], cwd=work, env=env, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(REPOS / "calc.git")], check=True)
    return REPOS / "calc.git"


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _state(http: httpx.Client, sid: str) -> str | None:
    r = http.get(f"/v1/sandboxes/{sid}")
    return r.json()["state"] if r.status_code == 200 else None


if __name__ == "__main__":
    main()
