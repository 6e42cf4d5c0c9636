"""Attacks on agent runs through the public API (issue 8): the agent's code is the attacker's, the
host's git reads what it leaves in /workspace, a second tenant tries the run routes.

The platform is test_runs.py's (its fixtures, one orchestrator for this module)."""

from tests.integration.test_runs import orchestrator, repos, request, run_settings, runs_api  # noqa: F401
from tests.runs_support import git, post, wait_state
from tests.support import wait_until


def test_a_nested_git_in_the_workspace_adds_no_gitlink_and_reads_no_host_repository(runs_api, repos, tenant) -> None:  # noqa: F811
    """A ``.git`` file saying ``gitdir: <host repository>`` made the host's ``git add`` open that
    repository and put its HEAD sha in the diff as a gitlink; a hand-made ``.git`` directory put a
    commit nobody can review into the merge request. Both are dropped: only the plain files count."""
    _, key = tenant
    host = repos["calc"]
    head = git("--git-dir", str(host), "rev-parse", "main")
    fake = "1" * 40
    step = (
        f"mkdir -p vendor/peek vendor/fake/.git/objects vendor/fake/.git/refs"
        f" && printf 'gitdir: {host}\\n' > vendor/peek/.git && echo {fake} > vendor/fake/.git/HEAD"
        f" && echo kept > vendor/fake/kept.txt"
    )
    body = request(host, steps=[{"run": step}], writable_paths=["vendor/"], test_command=None)
    r = post(f"{runs_api}/v1/requests", key, body)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    run = wait_state(runs_api, key, run_id, ("awaiting_review",))
    final = run["attempts"][0]["diffs"][-1]
    assert final["files"] == ["vendor/fake/kept.txt"], final
    assert head not in final["patch"] and fake not in final["patch"] and "Subproject" not in final["patch"]

    assert post(f"{runs_api}/v1/runs/{run_id}/review", key, {"decision": "approve"}).status_code == 202
    wait_state(runs_api, key, run_id, ("merged",))
    tree = git("--git-dir", str(host), "ls-tree", "-r", f"astraforge/{run_id}")
    assert "160000" not in tree and "vendor/fake/kept.txt" in tree


def test_a_repository_path_walking_out_of_the_allowlist_is_refused(runs_api, repos, tenant) -> None:  # noqa: F811
    """The allowlist ``<root>/allowed/*.git`` matched ``<root>/allowed/../elsewhere/calc.git``, and git
    cloned (and, on approval, would push to) the repository off the allowlist."""
    _, key = tenant
    sneaky = f"{repos['pattern'].rsplit('/', 1)[0]}/../elsewhere/calc.git"
    assert repos["other"].resolve() == (repos["calc"].parent / "../elsewhere/calc.git").resolve()
    r = post(f"{runs_api}/v1/requests", key, request(sneaky))
    assert r.status_code == 403 and r.json()["error"]["code"] == "repository_not_allowed", r.text


def test_a_workspace_nested_1500_deep_fails_the_run_at_once(runs_api, repos, tenant, orchestrator) -> None:  # noqa: F811
    """Each snapshot entry was resolved and realpath'd level by level (quadratic): a 33 KB snapshot
    of a workspace 1,500 directories deep held the run's driver for minutes of host CPU per capture
    (the run never left ``running``), and its tree broke ``shutil.rmtree`` (it recurses)."""
    _, key = tenant
    deep = "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\n"
    steps = [{"write": "vendor/deep.py", "content": deep}, {"run": "cd vendor && python3 deep.py"}]
    body = request(repos["calc"], steps=steps, writable_paths=["vendor/"], test_command=None)
    r = post(f"{runs_api}/v1/requests", key, body)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    run = wait_state(runs_api, key, run_id, ("failed",), timeout=90)
    assert "nests deeper than" in run["reason"], run["reason"]
    left = orchestrator.work_dir / run_id
    wait_until(lambda: not any(left.glob("*/*")), timeout=30, what="the run's host directories removed")
