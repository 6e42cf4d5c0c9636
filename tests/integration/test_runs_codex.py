"""Codex (and any other coding CLI) runs end to end on real services: the real Codex binary in the
run's docker sandbox, driven by the scripted model server on the operator's gateway address
(reached through the egress proxy, its key added there), from POST /v1/requests to a branch in the
local bare repository."""

import shlex
import subprocess
import threading
from collections import Counter

import httpx
import pytest

from astraforge.processors.runs.executors.codex import AGENT
from tests.conftest import GATEWAY_SECRET, gateway_listener
from tests.integration import test_runs_crash as crashes
from tests.integration.test_codex import data_of, leaks
from tests.integration.test_runs import orchestrator, repos, run_settings, runs_api  # noqa: F401 (fixtures)
from tests.integration.test_runs_crash import crash  # noqa: F401 (a fixture)
from tests.modelserver import ModelServer, Turn, apply_patch, exec_command, message
from tests.runs_support import CALC_FIXED, git, post, stream_so_far, stream_types, wait_state
from tests.support import auth, cli_env, wait_until

FIX = """*** Begin Patch
*** Update File: calc.py
@@
 def add(a, b):
-    return a - b
+    return a + b
*** End Patch
"""
NOTES = """*** Begin Patch
*** Add File: NOTES.md
+fixed add
*** End Patch
"""
SPEC = "Fix add() in calc.py so that the tests pass."
FIX_SCRIPT = [
    Turn((exec_command("python -B -m unittest -q"),)),
    Turn((apply_patch(FIX),)),
    Turn((exec_command("python -B -m unittest -q"),)),
    Turn((message("Fixed add(): it subtracted."),)),
]
NOTES_SCRIPT = [Turn((apply_patch(FIX),)), Turn((apply_patch(NOTES),)), Turn((message("Fixed, with notes."),))]


def codex_request(repo, **overrides) -> dict:
    body = {
        "spec": SPEC,
        "repository": str(repo),
        "agent": "codex",
        "test_command": "python -B -m unittest -v",
        "writable_paths": ["calc.py", "NOTES.md"],
    }
    return {**body, **overrides}


class RunKeySearch:
    """On each model request, while Codex waits for the answer: the gateway's key is nowhere in the
    run's sandbox (its processes' environments and command lines, its writable mounts)."""

    def __init__(self, sandbox_processor) -> None:
        self.sandbox_processor = sandbox_processor
        self.sandbox_id: str | None = None
        self.searched = 0

    def __call__(self, _) -> None:
        pid_ns = self.sandbox_processor.provider.handle(self.sandbox_id).peer.pid_ns
        found, commands = leaks(pid_ns, GATEWAY_SECRET.encode())
        assert not found, f"the gateway key is in the sandbox: {found}"
        assert any("/usr/local/bin/codex exec" in c for c in commands), commands
        self.searched += 1


def test_a_codex_run_from_request_to_branch(runs_api, run_settings, repos, tenant, sandbox_processor) -> None:  # noqa: F811
    _, key = tenant
    search = RunKeySearch(sandbox_processor)
    with ModelServer(FIX_SCRIPT + NOTES_SCRIPT, listener=gateway_listener(), on_request=search) as server:
        r = post(f"{runs_api}/v1/requests", key, codex_request(repos["calc"]))
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        search.sandbox_id = f"sb-{run_id.removeprefix('run-')}-a1"
        run = wait_state(runs_api, key, run_id, ("awaiting_review",), timeout=300)
        assert search.searched == len(FIX_SCRIPT)
        search.sandbox_id = f"sb-{run_id.removeprefix('run-')}-a2"
        first_requests = len(server.script.model_requests)
        prompt = str(server.script.model_requests[0].body["input"])

        (attempt,) = run["attempts"]
        assert [d["files"] for d in attempt["diffs"]] == [["calc.py"], ["calc.py"]]  # after the patch, at the end
        assert "+    return a + b" in attempt["diffs"][-1]["patch"]
        (tests,) = attempt["test_results"]
        assert (tests["passed"], tests["failed"], tests["exit_code"]) == (2, 0, 0)
        assert attempt["patch"]["files"] == ["calc.py"]

        records = stream_types(runs_api, key, run_id)
        agent = [(e["type"], e["payload"]) for e in records if e["actor"] == AGENT]
        kinds = [t for t, _ in agent]
        assert kinds == [
            "tool.called",
            "tool.result",
            "diff.produced",
            "tool.called",
            "tool.result",
            "chat.message",
            "agent.usage",
        ], kinds
        assert agent[1][1]["is_error"] and not agent[4][1]["is_error"]  # the tests failed, then passed
        assert agent[2][1]["files"] == ["calc.py"] and agent[2][1]["attempt"] == 1
        assert agent[5][1]["text"] == "Fixed add(): it subtracted."
        assert agent[6][1]["input_tokens"] == 120 * len(FIX_SCRIPT)
        egress = [e["payload"] for e in records if e["type"] == "egress.allowed"]
        assert len(egress) == len(FIX_SCRIPT) and all(e["credential_injected"] for e in egress)

        # rerun with guidance: the next attempt's Codex is told what the reviewer asked
        guidance = {"decision": "rerun", "guidance": "Also write NOTES.md saying what you fixed."}
        assert post(f"{runs_api}/v1/runs/{run_id}/review", key, guidance).status_code == 202
        run = wait_state(runs_api, key, run_id, ("awaiting_review",), timeout=300, attempt=2)
        second_prompt = str(server.script.model_requests[first_requests].body["input"])
    assert not server.script.errors and len(server.script.model_requests) == len(FIX_SCRIPT + NOTES_SCRIPT)
    assert search.searched == len(FIX_SCRIPT + NOTES_SCRIPT)
    assert SPEC in prompt and "calc.py, NOTES.md" in prompt  # the spec and the paths it may change
    assert "reviewer" not in prompt and "Also write NOTES.md saying what you fixed." in second_prompt
    assert sorted(run["attempts"][1]["patch"]["files"]) == ["NOTES.md", "calc.py"]

    assert post(f"{runs_api}/v1/runs/{run_id}/review", key, {"decision": "approve"}).status_code == 202
    run = wait_state(runs_api, key, run_id, ("merged",))
    branch = run["attempts"][1]["merge_request"]["branch"]
    assert git("--git-dir", str(repos["calc"]), "show", f"{branch}:calc.py") + "\n" == CALC_FIXED
    assert git("--git-dir", str(repos["calc"]), "show", f"{branch}:NOTES.md") == "fixed add"
    types = Counter(e["type"] for e in stream_types(runs_api, key, run_id))
    assert types["sandbox.requested"] == 2 and types["merge_request.opened"] == 1
    verify = subprocess.run(
        [".venv/bin/astraforge", "replay", run_id, "--verify"],
        env=cli_env(run_settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_codex_writing_outside_its_paths_is_blocked(runs_api, repos, tenant) -> None:  # noqa: F811
    """Landlock refuses the write in the sandbox; the attempt is a violation on record, and no patch."""
    _, key = tenant
    script = [Turn((apply_patch(FIX),)), Turn((apply_patch(NOTES),)), Turn((message("Done."),))]
    with ModelServer(script, listener=gateway_listener()):
        body = codex_request(repos["calc"], writable_paths=["docs/"], test_command=None)
        run_id = post(f"{runs_api}/v1/requests", key, body).json()["id"]
        run = wait_state(runs_api, key, run_id, ("failed",), timeout=300)
    assert run["reason"].startswith("blocked: step 1 touched calc.py"), run["reason"]
    (attempt,) = run["attempts"]
    assert [v["path"] for v in attempt["violations"]] == ["calc.py"] and attempt["patch"] is None
    assert [d["files"] for d in attempt["diffs"]] == [[]]  # Landlock refused the write: nothing changed


def test_cancel_stops_codex_and_its_sandbox(runs_api, repos, tenant, sandbox_processor) -> None:  # noqa: F811
    _, key = tenant
    asked, release = threading.Event(), threading.Event()

    def hold(_) -> None:  # Codex waits for its model's answer until the test lets go
        asked.set()
        release.wait(120)

    with ModelServer(FIX_SCRIPT, listener=gateway_listener(), on_request=hold):
        try:
            run_id = post(f"{runs_api}/v1/requests", key, codex_request(repos["calc"])).json()["id"]
            assert asked.wait(180), "Codex never asked its model"
            r = post(f"{runs_api}/v1/runs/{run_id}/cancel", key, {"reason": "not now"})
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
        finally:
            release.set()

    def codex_finished() -> list[dict]:
        records = stream_types(runs_api, key, run_id)
        return [
            e["payload"]
            for e in records
            if e["type"] == "exec.finished" and e["payload"]["command_id"].endswith("-codex")
        ]

    # the sandbox's stop is the processor's state; its closing record reaches the projection a moment later
    wait_until(lambda: codex_finished(), timeout=60, what="Codex's exec.finished in the run's records")
    assert codex_finished()[-1]["exit_code"] != 0
    assert httpx.get(f"{runs_api}/v1/runs/{run_id}", headers=auth(key)).json()["state"] == "cancelled"


@pytest.mark.parametrize("model", ["", "x\u0007"])
def test_a_codex_request_with_a_bad_model_is_4xx(runs_api, repos, tenant, model) -> None:  # noqa: F811
    r = post(f"{runs_api}/v1/requests", tenant[1], codex_request(repos["calc"], model=model))
    assert r.status_code == 422, r.text


def test_kill_9_mid_codex_resumes_without_duplicates(crash, tenant) -> None:  # noqa: F811
    """The orchestrator dies while Codex waits for its model; Codex goes on in its sandbox, and the
    next orchestrator follows the same exec: one sandbox, one Codex exec, each record once."""
    settings, url, repo = crash["settings"], crash["url"], crash["repo"]
    _, key = tenant
    asked, release = threading.Event(), threading.Event()

    def hold_second(request) -> None:
        if len(server.script.model_requests) == 2:  # Codex ran the tests, and waits to patch
            asked.set()
            release.wait(120)

    with ModelServer(FIX_SCRIPT, listener=gateway_listener(), on_request=hold_second) as server:
        first = crashes.orchestrator(settings)
        try:
            run_id = post(f"{url}/v1/requests", key, codex_request(repo)).json()["id"]
            assert asked.wait(240), "Codex never asked for its second turn"
            command = f"sb-{run_id.removeprefix('run-')}-a1-codex"
            wait_until(  # the driver recorded the first command Codex ran before it died
                lambda: "tool.result" in [e["type"] for e in stream_so_far(url, key, run_id)],
                timeout=60,
                what="the first command's record",
            )
        finally:
            first.kill()
            first.wait()
        second = crashes.orchestrator(settings)
        try:
            release.set()
            run = wait_state(url, key, run_id, ("awaiting_review",), timeout=300)
        finally:
            crashes.stop(second)
    assert not server.script.errors and len(server.script.model_requests) == len(FIX_SCRIPT)
    assert run["attempts"][0]["patch"]["files"] == ["calc.py"]
    records = stream_types(url, key, run_id)
    types = Counter(e["type"] for e in records)
    assert types["sandbox.requested"] == 1 and types["patch.proposed"] == 1 and types["test.result"] == 1
    started = Counter(e["payload"]["command_id"] for e in records if e["type"] == "exec.started")
    assert started[command] == 1 and set(started.values()) == {1}, started
    agent = Counter(e["type"] for e in records if e["actor"] == AGENT)
    assert agent == {"tool.called": 2, "tool.result": 2, "diff.produced": 1, "chat.message": 1, "agent.usage": 1}
    assert types["diff.captured"] == 2


# a stand-in coding CLI: reads the spec on stdin, says what it read, fixes calc.py
FIXER = shlex.quote(
    f"import sys; s = sys.stdin.read(); print('spec:', s.splitlines()[0]); open('calc.py', 'w').write({CALC_FIXED!r})"
)
STDIN_TEMPLATE = f"python3 -B -c {FIXER}"
FILE_TEMPLATE = f"head -1 {{spec_file}} > NOTES.md && python3 -B -c {FIXER} < {{spec_file}}"


@pytest.mark.parametrize("template", [STDIN_TEMPLATE, FILE_TEMPLATE], ids=["stdin", "file"])
def test_a_cli_agent_run_is_recorded_at_command_output_and_diff_level(
    runs_api,  # noqa: F811
    run_settings,  # noqa: F811
    repos,  # noqa: F811
    tenant,
    template,
    tmp_path,
) -> None:
    _, key = tenant
    if template == STDIN_TEMPLATE:
        body = codex_request(repos["calc"], agent="cli", command=template)
        run_id = post(f"{runs_api}/v1/requests", key, body).json()["id"]
    else:  # through `astraforge run`, as a user would
        spec = tmp_path / "spec.md"
        spec.write_text(SPEC)
        argv = [".venv/bin/astraforge", "run", "--spec", str(spec), "--repo", str(repos["calc"]), "--agent", "cli"]
        argv += ["--command", template, "--test", "python -B -m unittest -v", "--api", runs_api]
        env = {**cli_env(run_settings), "ASTRAFORGE_API_KEY": key}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "awaiting_review" in done.stderr, done.stdout + done.stderr
        run_id = done.stderr.split("run ", 1)[1].split()[0]
    run = wait_state(runs_api, key, run_id, ("awaiting_review",))
    (attempt,) = run["attempts"]
    files = ["NOTES.md", "calc.py"] if "spec_file" in template else ["calc.py"]
    assert sorted(attempt["patch"]["files"]) == files and attempt["test_results"][0]["passed"] == 2
    records = stream_types(runs_api, key, run_id)
    command = f"sb-{run_id.removeprefix('run-')}-a1-cli"
    started = [e for e in records if e["type"] == "exec.started" and e["payload"]["command_id"] == command]
    assert len(started) == 1
    output = b"".join(
        data_of(e["payload"]) for e in records if e["type"] == "exec.output" and e["payload"]["command_id"] == command
    )
    assert output == f"spec: {SPEC}\n".encode()
    assert [d["step"] for d in attempt["diffs"]] == [0]
    if "spec_file" in template:
        assert f"+{SPEC}\n" in attempt["diffs"][0]["patch"]
