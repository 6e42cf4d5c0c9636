"""kill -9 of the run orchestrator, mid-step and between the push and the merge request's record:
the next orchestrator resumes the run and nothing is done twice (one sandbox, each command once,
one commit, one merge request)."""

import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from astraforge.db import connect
from astraforge.producers.topics import ensure_topics
from astraforge.projections.postgres import drop_schema
from tests.conftest import make_settings
from tests.runs_support import CALC_FIXED, bare_repository, git, post, stream_so_far, stream_types, wait_state
from tests.support import cli_env, running_api, running_projector, wait_until

# holds the push at the point between "the branch is in the repository" and "the push returned"
BLOCKING_HOOK = """#!/bin/sh
cat > "{marker}.refs"
echo $$ > "{marker}.tmp" && mv "{marker}.tmp" "{marker}"
exec sleep 600
"""


@contextmanager
def crash_services(settings) -> Iterator[str]:
    """Fresh topics and schema for ``settings``, a sandbox processor, a projector and the API (its
    URL); orchestrators are started by the test, as processes."""
    from astraforge.processors.sandboxes import SandboxProcessor
    from astraforge.sandbox.providers import _local_docker
    from astraforge.sandbox.providers.docker import DockerProvider

    ensure_topics(settings)
    provider = DockerProvider(settings.state_dir, _local_docker(settings), namespace=settings.topic_prefix)
    sandboxes = SandboxProcessor(settings, provider)
    thread = threading.Thread(target=sandboxes.run, daemon=True)
    thread.start()
    try:
        with running_projector(settings), running_api(settings) as url:
            yield url
    finally:
        sandboxes.stop()
        thread.join(timeout=10)
        for sandbox_id in provider.list_ids():
            provider.stop(sandbox_id)
        with connect(settings, autocommit=True) as conn:
            drop_schema(conn, settings.projection_schema)


@pytest.fixture
def crash(tmp_path_factory) -> Iterator[dict]:
    """Fresh topics and schema per test (orchestrators come and go in this group), a sandbox
    processor, a projector and the API; orchestrators are started by the test, as processes.
    (Per test: with a group shared by both tests, the second test's first orchestrator sometimes
    consumed nothing at all: an open finding of the runtime, see the branch report.)"""
    root = tmp_path_factory.mktemp("crash")
    repo = bare_repository(root / "repos")
    settings = make_settings(repo_allowlist={"*": [f"{root}/repos/*.git"]}, warm_pools=[])
    with crash_services(settings) as url:
        yield {"settings": settings, "repo": repo, "url": url, "root": root}


def orchestrator(settings) -> subprocess.Popen:
    return subprocess.Popen(
        [".venv/bin/astraforge", "processors", "runs"],
        env=cli_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_kill_9_mid_run_and_mid_merge_resumes_without_duplicates(crash, tenant) -> None:
    settings, url, repo = crash["settings"], crash["url"], crash["repo"]
    _, key = tenant
    body = {
        "spec": "Fix add(), then write notes slowly.",
        "repository": str(repo),
        "steps": [{"write": "calc.py", "content": CALC_FIXED}, {"run": "sleep 3 && echo slow > NOTES.md"}],
        "test_command": "python -m unittest",
        "writable_paths": ["calc.py", "NOTES.md"],
    }
    first = orchestrator(settings)
    try:
        run_id = post(f"{url}/v1/requests", key, body).json()["id"]
        slow_step = f"sb-{run_id.removeprefix('run-')}-a1-s1"
        wait_until(
            lambda: any(
                e["type"] == "exec.started" and e["payload"]["command_id"] == slow_step
                for e in stream_so_far(url, key, run_id)
            ),
            timeout=120,
            what="the slow step",
        )
    finally:
        first.kill()  # SIGKILL while the driver waits for the slow step
        first.wait()
    second = orchestrator(settings)
    try:
        run = wait_state(url, key, run_id, ("awaiting_review",), timeout=180)
        assert [d["step"] for d in run["attempts"][0]["diffs"]] == [0, 1]

        # now hold the approval's push inside the repository's post-receive hook, and kill -9 there
        marker = crash["root"] / "pushed"
        hook = Path(repo) / "hooks" / "post-receive"
        hook.write_text(BLOCKING_HOOK.format(marker=marker))
        hook.chmod(0o755)
        assert post(f"{url}/v1/runs/{run_id}/review", key, {"decision": "approve"}).status_code == 202
        wait_until(marker.exists, timeout=120, what="the push")
    finally:
        second.kill()
        second.wait()
    os.kill(int(marker.read_text()), signal.SIGKILL)  # the orphaned hook
    hook.unlink()
    pushed_sha = marker.with_suffix(".refs").read_text().split()[1]
    branch = f"astraforge/{run_id}"
    assert git("--git-dir", str(repo), "rev-parse", branch) == pushed_sha  # pushed, and no record of it yet
    assert "merge_request.opened" not in [e["type"] for e in stream_types(url, key, run_id)]

    third = orchestrator(settings)
    try:
        run = wait_state(url, key, run_id, ("merged",), timeout=180)
    finally:
        stop(third)
    mr = run["attempts"][0]["merge_request"]
    assert mr["commit"] == pushed_sha == git("--git-dir", str(repo), "rev-parse", branch)  # the same commit, redone
    records = stream_types(url, key, run_id)
    types = Counter(e["type"] for e in records)
    assert types["merge_request.opened"] == 1 and types["sandbox.requested"] == 1 and types["run.merged"] == 1
    assert types["patch.proposed"] == 1 and types["diff.captured"] == 2 and types["test.result"] == 1
    started = Counter(e["payload"]["command_id"] for e in records if e["type"] == "exec.started")
    assert started and set(started.values()) == {1}, started  # no command ran twice
    assert git("--git-dir", str(repo), "rev-list", "--count", f"main..{branch}") == "1"


def test_a_run_resumed_on_a_moved_base_fails_with_the_reason(crash, tenant, tmp_path) -> None:
    settings, url = crash["settings"], crash["url"]
    _, key = tenant
    repo = bare_repository(crash["root"] / "repos", "moving")
    body = {"spec": "Slowly.", "repository": str(repo), "steps": [{"run": "sleep 3 && echo x > NOTES.md"}]}
    first = orchestrator(settings)
    try:
        run_id = post(f"{url}/v1/requests", key, body).json()["id"]
        wait_state(url, key, run_id, ("running",), timeout=120)
    finally:
        first.kill()
        first.wait()
    work = tmp_path / "work"  # meanwhile, main moves on
    git("clone", "-q", str(repo), str(work))
    (work / "calc.py").write_text("moved = True\n")
    git("commit", "-qam", "moved", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    second = orchestrator(settings)
    try:
        run = wait_state(url, key, run_id, ("failed",), timeout=180)
    finally:
        stop(second)
    assert run["reason"] == f"main of {repo} moved while the run was interrupted: rerun it"
    assert "patch.proposed" not in [e["type"] for e in stream_types(url, key, run_id)]
