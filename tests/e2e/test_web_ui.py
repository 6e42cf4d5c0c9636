"""The web UI end to end in real Chromium (Debian's, driven by playwright-core) against the real
platform: API + projector + run orchestrator + sandbox processor (docker) on the session's topics.

The browser work is in web/e2e/*.mjs (Node, where playwright-core lives); this module starts the
platform, builds the UI (cached), installs Chromium when missing, runs the script and reports what
it printed. Screenshots are saved under test-results/web-e2e/ (CI keeps them as artifacts).
"""

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from astraforge.processors.runs.orchestrator import RunOrchestrator
from tests.runs_support import bare_repository
from tests.support import running_api

ROOT = Path(__file__).resolve().parents[2]
WEB_SH = ROOT / "deploy" / "local" / "web.sh"
ARTIFACTS = Path(os.environ.get("ASTRAFORGE_TEST_ARTIFACTS", ROOT / "test-results")) / "web-e2e"


def _web_sh(command: str) -> str:
    done = subprocess.run(["bash", str(WEB_SH), command], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"web.sh {command} failed:\n{done.stderr[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def web_dist() -> Path:
    return Path(_web_sh("build"))


@pytest.fixture(scope="module")
def chromium() -> str:
    return _web_sh("browser")


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("repos")
    return {"calc": bare_repository(root / "allowed"), "pattern": f"{root / 'allowed'}/*.git"}


@pytest.fixture(scope="module")
def platform(settings, repos, projector, sandbox_processor, web_dist, tmp_path_factory) -> Iterator[str]:
    """The API serving the built UI, with the orchestrator running runs on the session's sandboxes."""
    run_settings = settings.model_copy(update={"repo_allowlist": {"*": [repos["pattern"]]}, "web_dist": web_dist})
    orchestrator = RunOrchestrator(run_settings, work_dir=tmp_path_factory.mktemp("runs-work"))
    thread = threading.Thread(target=orchestrator.run, daemon=True)
    thread.start()
    try:
        with running_api(run_settings, sse_ping_s=1.0) as url:
            yield url
    finally:
        orchestrator.stop()
        thread.join(timeout=30)


def run_script(script: str, chromium: str, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["node", f"e2e/{script}"],
        cwd=ROOT / "web",
        env={**os.environ, "CHROMIUM": chromium, "ARTIFACTS": str(ARTIFACTS), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(done.stdout, done.stderr)
    return done


def test_submit_watch_cut_the_network_approve_and_see_the_merge_request(platform, repos, tenant, chromium) -> None:
    """Keyboard sign-in, the new-run form, the live timeline and diff, a network cut while the run's
    second attempt appends records (the timeline resumes with Last-Event-ID: every record once),
    approval in the UI, the merge request link, the audit page's verify; labels and contrast checked
    on every page in both themes."""
    _, key = tenant
    done = run_script("review.mjs", chromium, API_URL=platform, API_KEY=key, REPO=str(repos["calc"]))
    assert done.returncode == 0, done.stderr[-4000:]
    assert (ARTIFACTS / "07-run-merged.png").stat().st_size > 0


def test_sandboxes_page_creates_a_sandbox_and_its_console_runs_a_command(platform, tenant, chromium) -> None:
    """New sandbox from the list, a command in the exec console (its output there and, live, in the
    sandbox's timeline), then Stop until the badge says terminated."""
    _, key = tenant
    done = run_script("sandboxes.mjs", chromium, API_URL=platform, API_KEY=key)
    assert done.returncode == 0, done.stderr[-4000:]
