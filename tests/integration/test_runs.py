"""Runs end to end on real services: API -> run.create -> run orchestrator -> sandbox processor
(docker) -> events -> projection -> API; the branch lands in a local bare repository."""

import json
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest

from astraforge.processors.runs.orchestrator import RunOrchestrator
from tests.runs_support import CALC_FIXED, bare_repository, git, post, stream_types, wait_state
from tests.security.test_cross_tenant import RUN_ROUTES
from tests.support import auth, cli_env, running_api, wait_until


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("repos")
    allowed = root / "allowed"
    return {
        "calc": bare_repository(allowed),
        "pattern": f"{allowed}/*.git",
        "other": bare_repository(root / "elsewhere"),
    }


@pytest.fixture(scope="module")
def run_settings(settings, repos):
    """The session's topics and schema, with a repository allowlist for every tenant."""
    return settings.model_copy(update={"repo_allowlist": {"*": [repos["pattern"]]}})


@pytest.fixture(scope="module")
def orchestrator(run_settings, sandbox_processor, tmp_path_factory) -> Iterator[RunOrchestrator]:
    o = RunOrchestrator(run_settings, work_dir=tmp_path_factory.mktemp("runs-work"))
    thread = threading.Thread(target=o.run, daemon=True)
    thread.start()
    yield o
    o.stop()
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def runs_api(run_settings, projector, orchestrator) -> Iterator[str]:
    with running_api(run_settings, sse_ping_s=1.0) as url:
        yield url


def request(repo, **overrides) -> dict:
    body = {
        "spec": "Fix add() in calc.py; add release notes; drop old.txt; ship the data file.",
        "repository": str(repo),
        "agent": "script",
        "steps": [
            {"write": "calc.py", "content": CALC_FIXED},
            {"run": "printf 'fixed add\\n' > NOTES.md && rm old.txt && printf '\\000\\001\\002' > data.bin"},
        ],
        "test_command": "python -m unittest -v",
        "writable_paths": ["calc.py", "NOTES.md", "old.txt", "data.bin"],
    }
    return {**body, **overrides}


def test_a_script_run_from_request_to_branch(runs_api, run_settings, repos, tenant, other_tenant) -> None:
    _, key = tenant
    r = post(f"{runs_api}/v1/requests", key, request(repos["calc"]), **{"Idempotency-Key": "run-1"})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    again = post(f"{runs_api}/v1/requests", key, request(repos["calc"]), **{"Idempotency-Key": "run-1"})
    assert again.json()["id"] == run_id  # a retried request starts no second run

    run = wait_state(runs_api, key, run_id, ("awaiting_review",))
    (attempt,) = run["attempts"]
    assert [d["step"] for d in attempt["diffs"]] == [0, 1]
    assert attempt["diffs"][0]["files"] == ["calc.py"]
    final = attempt["diffs"][-1]
    assert sorted(final["files"]) == ["NOTES.md", "calc.py", "data.bin", "old.txt"]
    assert final["binary_files"] == ["data.bin"] and "deleted file mode" in final["patch"]
    (tests,) = attempt["test_results"]
    assert (tests["passed"], tests["failed"], tests["exit_code"], tests["source"]) == (2, 0, 0, "unittest")
    assert attempt["patch"]["files"] == final["files"] and attempt["violations"] == []
    assert httpx.get(f"{runs_api}/v1/runs/{run_id}", headers=auth(other_tenant[1])).status_code == 404

    listed = httpx.get(
        f"{runs_api}/v1/runs", headers=auth(key), params={"state": "awaiting_review", "text": "no such words"}
    )
    assert [x["id"] for x in listed.json()["items"]] == []
    listed = httpx.get(
        f"{runs_api}/v1/runs", headers=auth(key), params={"text": "release notes", "repository": str(repos["calc"])}
    )
    assert [x["id"] for x in listed.json()["items"]] == [run_id]

    approved = post(f"{runs_api}/v1/runs/{run_id}/review", key, {"decision": "approve", "comment": "lgtm"})
    assert approved.status_code == 202, approved.text
    run = wait_state(runs_api, key, run_id, ("merged",))
    mr = run["attempts"][0]["merge_request"]
    branch = f"astraforge/{run_id}"
    assert mr["provider"] == "local" and mr["branch"] == branch and mr["url"].endswith(f"#{branch}")
    bare = repos["calc"]
    assert git("--git-dir", str(bare), "rev-parse", branch) == mr["commit"]
    assert git("--git-dir", str(bare), "show", f"{branch}:calc.py") + "\n" == CALC_FIXED
    assert git("--git-dir", str(bare), "ls-tree", "--name-only", branch).split() == [
        "NOTES.md",
        "calc.py",
        "data.bin",
        "test_calc.py",
    ]
    assert post(f"{runs_api}/v1/runs/{run_id}/review", key, {"decision": "approve"}).status_code == 409

    types = [e["type"] for e in stream_types(runs_api, key, run_id)]
    states = [t for t in types if t.startswith("run.") and t != "run.accepted"]
    assert states == [
        "run.requested",
        "run.provisioning",
        "run.preparing",
        "run.running",
        "run.verifying",
        "run.awaiting_review",
        "run.approved",
        "run.merged",
    ]
    assert types.count("sandbox.requested") == 1 and types.count("merge_request.opened") == 1
    verify = subprocess.run(
        [".venv/bin/astraforge", "replay", run_id, "--verify"],
        env=cli_env(run_settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_run_writing_outside_its_paths_is_blocked(runs_api, repos, tenant) -> None:
    _, key = tenant
    body = request(
        repos["calc"],
        writable_paths=["calc.py"],
        steps=[{"write": "calc.py", "content": CALC_FIXED}, {"run": "echo sneaky > test_calc.py"}],
    )
    run_id = post(f"{runs_api}/v1/requests", key, body).json()["id"]
    run = wait_state(runs_api, key, run_id, ("failed",))
    assert run["reason"].startswith("blocked: step 2 touched test_calc.py")
    (attempt,) = run["attempts"]
    assert [v["path"] for v in attempt["violations"]] == ["test_calc.py"] and attempt["patch"] is None

    write_outside = request(repos["calc"], writable_paths=["calc.py"], steps=[{"write": "../x", "content": "x"}])
    run_id = post(f"{runs_api}/v1/requests", key, write_outside).json()["id"]
    run = wait_state(runs_api, key, run_id, ("failed",))
    assert run["attempts"][0]["violations"][0]["path"] == "../x"
    records = stream_types(runs_api, key, run_id)
    written = [e["payload"]["request_id"] for e in records if e["type"] == "file.written"]
    assert written == [f"sb-{run_id.removeprefix('run-')}-a1-source"]  # the step never reached the sandbox
    assert "patch.proposed" not in [e["type"] for e in records]


def test_a_repository_off_the_allowlist_is_refused(runs_api, repos, tenant) -> None:
    _, key = tenant
    r = post(f"{runs_api}/v1/requests", key, request(repos["other"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "repository_not_allowed"
    run_id = r.json()["error"]["details"]["run_id"]
    records = []

    def recorded() -> bool:
        records[:] = (
            stream_types(runs_api, key, run_id)
            if httpx.get(f"{runs_api}/v1/streams/{run_id}/events", headers=auth(key)).status_code == 200
            else []
        )
        return bool(records)

    wait_until(recorded, timeout=30, what="the refusal's record")
    assert [(e["type"], e["payload"]["rule"]) for e in records] == [("guardrail.violated", "repository")]
    assert httpx.get(f"{runs_api}/v1/runs/{run_id}", headers=auth(key)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"spec": "x", "repository": "/r.git", "agent": "script"},
        {"spec": "x", "repository": "/r.git", "steps": [{"run": "a", "write": "b"}]},
        {"spec": "", "repository": "/r.git", "steps": [{"run": "a"}]},
        {"spec": "x", "repository": "/r.git", "steps": [{"run": "a"}], "base_branch": "--upload-pack=x"},
        {"spec": "x", "repository": "--upload-pack=x", "steps": [{"run": "a"}]},
        {"spec": "x", "repository": "/r.git", "agent": "codex", "steps": [{"run": "a"}]},
        {"spec": "x", "repository": "/r.git", "agent": "cli"},
        {"spec": "x\u0000y", "repository": "/r.git", "steps": [{"run": "a"}]},
        {"spec": "x", "repository": "/r.git", "steps": [{"run": "a"}], "egress_allow": ["*.com"]},
        {"spec": "x", "repository": "/r.git", "steps": [{"run": "a"}], "egress_allow": ["model-gateway"]},
        {"spec": "x", "repository": "/r.git", "steps": [{"write": "a", "content": "y" * 500_000}] * 2},
        {"spec": "x", "repository": "/r.git", "steps": [{"write": "a", "content": "\u0000"}]},
        {"spec": "x", "repository": "/r", "steps": [{"run": "a"}], "attachments": [{"name": "../a", "content": ""}]},
        {"spec": "x", "repository": "/r", "steps": [{"run": "a"}], "attachments": [{"name": "a", "content": ""}] * 2},
        {
            "spec": "x",
            "repository": "/r.git",
            "steps": [{"run": "a"}],
            "attachments": [{"name": "a", "content": "not base64!", "encoding": "base64"}],
        },
    ],
)
def test_bad_requests_are_4xx(runs_api, tenant, body) -> None:
    assert post(f"{runs_api}/v1/requests", tenant[1], body).status_code == 422


def test_attachments_reach_the_agent_outside_the_repository(runs_api, repos, tenant) -> None:
    """A request's attachments are files in the agent's sandbox (~/attachments/<name>, text or base64):
    the agent reads them; they never show up in the diff or the patch."""
    _, key = tenant
    body = request(
        repos["calc"],
        steps=[{"run": "cat ~/attachments/trace.log > NOTES.md && cat ~/attachments/blob.bin > data.bin"}],
        writable_paths=["NOTES.md", "data.bin"],
        test_command=None,
        attachments=[
            {"name": "trace.log", "content": "ZeroDivisionError in add()\n"},
            {"name": "blob.bin", "content": "AAEC", "encoding": "base64"},
        ],
    )
    run_id = post(f"{runs_api}/v1/requests", key, body).json()["id"]
    run = wait_state(runs_api, key, run_id, ("awaiting_review", "failed"))
    assert run["state"] == "awaiting_review", run["reason"]
    (diff,) = run["attempts"][0]["diffs"]
    assert sorted(diff["files"]) == ["NOTES.md", "data.bin"] and diff["binary_files"] == ["data.bin"]
    assert "+ZeroDivisionError in add()" in diff["patch"] and "attachments" not in diff["patch"]
    written = [e["payload"]["path"] for e in stream_types(runs_api, key, run_id) if e["type"] == "file.written"]
    assert written[-2:] == ["/home/sandbox/attachments/trace.log", "/home/sandbox/attachments/blob.bin"]


def test_a_runs_sandbox_counts_against_the_tenants_quota(runs_api, run_settings, repos) -> None:
    """Runs create sandboxes too: past the tenant's sandbox quota a request is refused with 429 (a tenant
    could otherwise have as many sandboxes as it sent requests)."""
    from astraforge.keys import create_key

    key = create_key(run_settings, "quota-runs")
    with running_api(run_settings.model_copy(update={"quota_sandboxes": 1})) as api:
        first = post(f"{api}/v1/requests", key, request(repos["calc"]))
        assert first.status_code == 201, first.text
        second = post(f"{api}/v1/requests", key, request(repos["calc"]))
        assert second.status_code == 429 and "sandboxes" in second.text
    post(f"{runs_api}/v1/runs/{first.json()['id']}/cancel", key)


def test_cancel_stops_the_agent_and_the_sandbox(runs_api, repos, tenant, sandbox_processor) -> None:
    _, key = tenant
    body = request(repos["calc"], steps=[{"run": "sleep 300"}], test_command=None)
    run_id = post(f"{runs_api}/v1/requests", key, body).json()["id"]
    wait_state(runs_api, key, run_id, ("running",))
    wait_until(
        lambda: any(
            e["type"] == "exec.started" and e["payload"]["command_id"].endswith("-s0")
            for e in stream_types(runs_api, key, run_id)
        ),
        timeout=60,
        what="the step's start",
    )
    r = post(f"{runs_api}/v1/runs/{run_id}/cancel", key, {"reason": "changed my mind"})
    assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text
    sandbox_id = f"sb-{run_id.removeprefix('run-')}-a1"
    wait_until(
        lambda: (
            sandbox_processor.state(sandbox_id) is not None
            and sandbox_processor.state(sandbox_id).state == "terminated"
        ),
        timeout=60,
        what="the sandbox's stop",
    )
    finished = [e for e in stream_types(runs_api, key, run_id) if e["type"] == "exec.finished"]
    assert finished[-1]["payload"]["command_id"].endswith("-s0") and finished[-1]["payload"]["exit_code"] != 0
    assert post(f"{runs_api}/v1/runs/{run_id}/cancel", key).status_code == 409


def test_rerun_with_guidance_keeps_every_attempt(runs_api, repos, tenant) -> None:
    _, key = tenant
    body = request(
        repos["calc"],
        steps=[{"run": 'printf "guidance: %s\\n" "$ASTRAFORGE_GUIDANCE" > NOTES.md'}],
        writable_paths=["NOTES.md"],
        test_command=None,
    )
    run_id = post(f"{runs_api}/v1/requests", key, body).json()["id"]
    wait_state(runs_api, key, run_id, ("awaiting_review",))
    assert post(f"{runs_api}/v1/runs/{run_id}/review", key, {"decision": "rerun"}).status_code == 422
    r = post(f"{runs_api}/v1/runs/{run_id}/review", key, {"decision": "rerun", "guidance": "say please"})
    assert r.status_code == 202 and r.json()["attempt"] == 2, r.text
    run = wait_state(runs_api, key, run_id, ("awaiting_review",))
    first, second = run["attempts"]
    assert first["review"]["decision"] == "rerun" and second["guidance"] == "say please"
    assert "+guidance: \n" in first["diffs"][0]["patch"] and "+guidance: say please\n" in second["diffs"][0]["patch"]
    assert post(f"{runs_api}/v1/runs/{run_id}/review", key, {"decision": "reject", "comment": "no"}).status_code == 202
    assert wait_state(runs_api, key, run_id, ("rejected",))["attempt"] == 2
    sandboxes = [e["sandbox_id"] for e in stream_types(runs_api, key, run_id) if e["type"] == "sandbox.requested"]
    assert sandboxes == [f"sb-{run_id.removeprefix('run-')}-a1", f"sb-{run_id.removeprefix('run-')}-a2"]


def test_the_cli_runs_follows_and_approves(runs_api, run_settings, repos, tenant, tmp_path) -> None:
    _, key = tenant
    spec = tmp_path / "spec.md"
    spec.write_text("Fix add() in calc.py\n")
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps([{"write": "calc.py", "content": CALC_FIXED}]))
    env = {**cli_env(run_settings), "ASTRAFORGE_API_KEY": key}
    cli = [".venv/bin/astraforge"]
    submit = [
        *cli,
        "run",
        "--spec",
        str(spec),
        "--repo",
        str(repos["calc"]),
        "--agent",
        "script",
        "--script",
        str(steps),
        "--test",
        "python -m unittest",
        "--api",
        runs_api,
    ]
    done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "awaiting_review" in done.stderr and "tests: 2 passed, 0 failed" in done.stderr
    run_id = done.stderr.split("run ", 1)[1].split()[0]
    listed = subprocess.run(
        [*cli, "runs", "list", "--state", "awaiting_review", "--api", runs_api],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run_id[:12] in listed.stdout
    approve = subprocess.run(
        [*cli, "runs", "approve", run_id, "--api", runs_api], env=env, capture_output=True, text=True, timeout=300
    )
    assert approve.returncode == 0 and f"#astraforge/{run_id}" in approve.stderr, approve.stderr

    failing = [*submit[:-4], "--test", "python -c 'raise SystemExit(3)'", "--api", runs_api]
    done = subprocess.run(failing, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "tests failed: exit 3" in done.stderr, done.stderr


def test_another_tenant_gets_404_on_every_run_route(runs_api, repos, tenant, other_tenant) -> None:
    _, key = tenant
    body = request(repos["calc"], test_command=None)
    run_id = post(f"{runs_api}/v1/requests", key, body).json()["id"]
    wait_state(runs_api, key, run_id, ("awaiting_review",))
    _, intruder = other_tenant
    for (method, template), payload in {**RUN_ROUTES, ("GET", "/v1/streams/{run_id}/events"): None}.items():
        r = httpx.request(method, runs_api + template.format(run_id=run_id), headers=auth(intruder), json=payload)
        assert r.status_code == 404, (method, template, r.status_code, r.text)
    assert run_id not in httpx.get(f"{runs_api}/v1/runs", headers=auth(intruder)).text
    assert wait_state(runs_api, key, run_id, ("awaiting_review",))["attempt"] == 1  # nothing changed


def test_paths_outside_the_writable_directories_are_read_only_inside_the_sandbox(runs_api, repos, tenant) -> None:
    _, key = tenant
    steps = [{"run": "mkdir -p src && echo ok > src/new.py && echo sneaky > calc.py"}]
    body = request(repos["calc"], steps=steps, writable_paths=["src/"], test_command=None)
    run_id = post(f"{runs_api}/v1/requests", key, body).json()["id"]
    run = wait_state(runs_api, key, run_id, ("failed",))
    assert run["reason"].startswith("step 1 (mkdir -p src") and "exited" in run["reason"]
    records = stream_types(runs_api, key, run_id)
    output = "".join(e["payload"]["data"] for e in records if e["type"] == "exec.output")
    assert "calc.py: Permission denied" in output  # refused by the kernel, not found afterwards
    started = next(e for e in records if e["type"] == "exec.started" and e["payload"]["command_id"].endswith("-s0"))
    assert started["payload"]["argv"][:3] == ["python3", "-I", "-c"] and "/workspace/src" in started["payload"]["argv"]
