"""Runs through the toolkit against the running platform (API, run orchestrator, sandbox
processor): create a script run, follow it to review, approve it, see it merged."""

import threading
from collections.abc import Iterator

import pytest
from astraforge_toolkit import AstraForgeClient, Conflict, Run

from astraforge.processors.runs.orchestrator import RunOrchestrator
from tests.conftest import new_tenant
from tests.runs_support import CALC_FIXED, ENDED, bare_repository, git
from tests.support import running_api, wait_until


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return bare_repository(tmp_path_factory.mktemp("toolkit-repos") / "allowed")


@pytest.fixture(scope="module")
def runs_api(settings, projector, sandbox_processor, repo, tmp_path_factory) -> Iterator[str]:
    run_settings = settings.model_copy(update={"repo_allowlist": {"*": [f"{repo.parent}/*.git"]}})
    orchestrator = RunOrchestrator(run_settings, work_dir=tmp_path_factory.mktemp("toolkit-runs-work"))
    thread = threading.Thread(target=orchestrator.run, daemon=True)
    thread.start()
    try:
        with running_api(run_settings, sse_ping_s=1.0) as url:
            yield url
    finally:
        orchestrator.stop()
        thread.join(timeout=30)


def wait_for(client: AstraForgeClient, run_id: str, state: str) -> Run:
    seen: list[Run] = []

    def reached() -> bool:
        seen[:] = [client.get_run(run_id)]
        assert seen[0].state == state or seen[0].state not in ENDED, seen[0]
        return seen[0].state == state

    wait_until(reached, timeout=180, interval=0.2, what=f"run {run_id} {state}")
    return seen[0]


def test_a_run_from_request_to_merge(runs_api, settings, repo) -> None:
    with AstraForgeClient(runs_api, new_tenant(settings)[1]) as client:
        run = client.create_run(
            "Fix add() in calc.py",
            str(repo),
            agent="script",
            steps=[{"write": "calc.py", "content": CALC_FIXED}],
            test_command="python -m unittest -v",
            writable_paths=["calc.py"],
        )
        assert isinstance(run, Run) and run.repository == str(repo)
        review = wait_for(client, run.id, "awaiting_review")
        (attempt,) = review.raw["attempts"]
        assert attempt["patch"]["files"] == ["calc.py"] and attempt["test_results"][0]["failed"] == 0
        assert run.id in [r.id for r in client.list_runs(state="awaiting_review").items]

        client.approve_run(run.id, comment="lgtm")
        merged = wait_for(client, run.id, "merged")
        branch = merged.raw["attempts"][0]["merge_request"]["branch"]
        assert git("--git-dir", str(repo), "show", f"{branch}:calc.py") + "\n" == CALC_FIXED
        with pytest.raises(Conflict):
            client.approve_run(run.id)


def test_a_run_cancelled_through_the_client(runs_api, settings, repo) -> None:
    with AstraForgeClient(runs_api, new_tenant(settings)[1]) as client:
        run = client.create_run("Wait", str(repo), agent="script", steps=[{"run": "sleep 120"}])
        cancelled = client.cancel_run(run.id, reason="changed my mind")
        assert cancelled.id == run.id
        assert wait_for(client, run.id, "cancelled").reason == "changed my mind"
