"""GitHub and GitLab merge requests against the stand-in (tests/vcs_standin.py): the branch pushed
over smart HTTP with the token in a header only, the PR/MR opened through the REST API as documented,
and an approval redone after a crash reuses the one it opened (never a second) — on the providers
themselves, and through a whole run whose orchestrator is killed -9 while GitHub opens its PR."""

import json
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from astraforge.processors.runs import workspace
from astraforge.processors.runs.vcs import GitHub, GitLab, VcsError, make_provider
from tests.conftest import make_settings
from tests.integration import test_runs_crash as crashes
from tests.integration.test_runs_crash import crash_services
from tests.runs_support import CALC_FIXED, bare_repository, git, post, stream_types, wait_state
from tests.support import wait_until
from tests.vcs_standin import ForgeServer

PATCH_TITLE = "Fix add()"
# records every git command line (and its remote's config) before running the real git
GIT_SPY = """#!/bin/sh
printf '%s\\n' "$*" >> "{log}"
exec /usr/bin/git "$@"
"""
FIX_STEP = {"write": "calc.py", "content": CALC_FIXED}
PROVIDERS = {"github": (GitHub, "x-access-token", "/api/v3"), "gitlab": (GitLab, "oauth2", "/api/v4")}


@pytest.fixture
def git_spy(tmp_path, monkeypatch) -> Path:
    """``git`` on PATH logs its argv first: whatever reaches a git command line is in the log."""
    bin_dir, log = tmp_path / "spy-bin", tmp_path / "git-argv.log"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(GIT_SPY.format(log=log))
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def forge(tmp_path: Path, kind: str, token: str) -> ForgeServer:
    bare_repository(tmp_path / "forge" / "acme", "calc")
    return ForgeServer(tmp_path / "forge", token, PROVIDERS[kind][1])


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_push_and_open_keep_the_token_in_headers_and_never_open_twice(kind, tmp_path, git_spy) -> None:
    token = f"tok-{secrets.token_hex(12)}"
    with forge(tmp_path, kind, token) as server:
        repository = f"{server.url}/acme/calc.git"
        provider = make_provider(kind, server.url + PROVIDERS[kind][2], token)
        auth = provider.git_env()
        base_sha = workspace.clone(repository, "main", tmp_path / "clone", auth)
        # the patch, made as the driver makes it: calc.py fixed
        (tmp_path / "tree").mkdir()
        for name in ("calc.py", "test_calc.py", "old.txt"):
            (tmp_path / "tree" / name).write_bytes((tmp_path / "clone" / name).read_bytes())
        (tmp_path / "tree" / "calc.py").write_text(CALC_FIXED)
        patch = workspace.diff(tmp_path / "clone", tmp_path / "tree", tmp_path / "index").patch
        branch = "astraforge/run-1"
        sha = workspace.commit_and_push(
            repository, "main", branch, patch, PATCH_TITLE, 1_700_000_000, tmp_path / "merge", auth
        )
        assert git("--git-dir", str(tmp_path / "forge/acme/calc.git"), "rev-parse", branch) == sha != base_sha

        opened = provider.open(repository, branch, "main", PATCH_TITLE, "body")
        assert (opened.number, opened.reused) == (1, False)
        # the approval redone after a crash (pushed and opened, nothing recorded): the same one
        workspace.commit_and_push(repository, "main", branch, patch, PATCH_TITLE, 1_700_000_000, tmp_path / "m2", auth)
        assert provider.open(repository, branch, "main", PATCH_TITLE, "body") == opened.__class__(
            opened.url, 1, reused=True
        )
        server.forge.lagging_lists = 1  # the list misses it: the create's 422 / 409 says it exists
        assert provider.open(repository, branch, "main", PATCH_TITLE, "body").url == opened.url
        assert len(server.forge.pulls) == 1

        requests = server.forge.requests
        creates = [r for r in requests if r.method == "POST" and "/api/" in r.path]
        assert [c.path for c in creates] == (
            ["/api/v3/repos/acme/calc/pulls"] * 2
            if kind == "github"
            else ["/api/v4/projects/acme%2Fcalc/merge_requests"] * 2
        )
        if kind == "github":
            assert creates[0].body == {"title": PATCH_TITLE, "head": branch, "base": "main", "body": "body"}
            assert {r.headers["x-github-api-version"] for r in requests if "/api/" in r.path} == {"2022-11-28"}
        else:
            assert creates[0].body["source_branch"] == branch and creates[0].body["target_branch"] == "main"
            assert {r.headers["private-token"] for r in requests if "/api/" in r.path} == {token}
        assert any(r.path.endswith("git-receive-pack") for r in requests)  # pushed over smart HTTP

    # the token travelled in headers only: in no git command line, remote URL or file of the clones
    argv = git_spy.read_text()
    assert "clone" in argv and "push" in argv and token not in argv
    for clone in ("clone", "merge", "m2"):
        config = (tmp_path / clone / ".git" / "config").read_text()
        assert token not in config and f"{server.url}/acme/calc.git" in config
    assert not any(
        token in p.read_text(errors="replace") for p in (tmp_path / "merge" / ".git").rglob("*") if p.is_file()
    )


def test_without_the_token_the_push_is_refused(tmp_path) -> None:
    with forge(tmp_path, "github", "right") as server:
        with pytest.raises(workspace.GitFailed):
            workspace.clone(f"{server.url}/acme/calc.git", "main", tmp_path / "c", GitHub("x", "wrong").git_env())
        assert GitHub(server.url + "/api/v3", "wrong").http.get("/repos/acme/calc/pulls").status_code == 401
        with pytest.raises(VcsError, match="401"):
            GitHub(server.url + "/api/v3", "wrong").open(f"{server.url}/acme/calc.git", "b", "main", "t", "b")


def test_kill_9_between_push_and_the_pull_request_record_opens_one(tmp_path, tenant) -> None:
    """The orchestrator dies while GitHub opens the PR (pushed, opened, nothing recorded); the next
    one redoes the approval: the same commit pushed again, the open PR found and recorded, no second."""
    _, key = tenant
    token = f"tok-{secrets.token_hex(12)}"
    with forge(tmp_path, "github", token) as server:
        settings = make_settings(
            repo_allowlist={"*": [f"{server.url}/acme/*"]},
            warm_pools=[],
            vcs_provider="github",
            vcs_api_url=f"{server.url}/api/v3",
            vcs_token=SecretStr(token),
        )
        with crash_services(settings) as url:
            body = {"spec": "Fix add()", "repository": f"{server.url}/acme/calc.git", "steps": [FIX_STEP]}
            first = crashes.orchestrator(settings)
            try:
                run_id = post(f"{url}/v1/requests", key, body).json()["id"]
                wait_state(url, key, run_id, ("awaiting_review",), timeout=180)
                server.forge.hold_creates = threading.Event()
                assert post(f"{url}/v1/runs/{run_id}/review", key, {"decision": "approve"}).status_code == 202
                assert server.forge.create_arrived.wait(120), "the PR was never asked for"
            finally:
                first.kill()
                first.wait()
            server.forge.hold_creates.set()  # GitHub opens it; nobody hears the answer
            wait_until(lambda: len(server.forge.pulls) == 1, timeout=30, what="the PR")
            assert "merge_request.opened" not in [e["type"] for e in stream_types(url, key, run_id)]
            second = crashes.orchestrator(settings)
            try:
                run = wait_state(url, key, run_id, ("merged",), timeout=180)
            finally:
                crashes.stop(second)
            records = stream_types(url, key, run_id)
    (pull,) = [p["json"] for p in server.forge.pulls]
    mr = run["attempts"][0]["merge_request"]
    assert (mr["provider"], mr["url"], mr["number"]) == ("github", pull["html_url"], 1)
    assert pull["head"]["ref"] == f"astraforge/{run_id}" and pull["title"] == "Fix add()"
    bare = tmp_path / "forge/acme/calc.git"
    assert git("--git-dir", str(bare), "show", f"astraforge/{run_id}:calc.py") + "\n" == CALC_FIXED
    assert git("--git-dir", str(bare), "rev-list", "--count", f"main..astraforge/{run_id}") == "1"
    assert [e["type"] for e in records].count("merge_request.opened") == 1
    creates = [r for r in server.forge.requests if r.method == "POST" and r.path.endswith("/pulls")]
    assert len(creates) == 1  # the second orchestrator found it, and asked for none


class _Garbled(BaseHTTPRequestHandler):
    """An API behind a broken proxy: lists are empty, a create answers 201 with an HTML page."""

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b"[]", "application/json")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(201, b"<html>created</html>", "text/html")


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_an_answer_that_is_not_the_documented_json_is_a_vcs_error(kind) -> None:
    """A garbled answer used to raise ValueError/KeyError out of ``open``, which the merge driver
    does not catch: its thread died and the run stayed ``approved`` with no reason, retried only
    when its partition next moved. It is the provider failing, like any refusal."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbled)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        provider = PROVIDERS[kind][0](f"http://127.0.0.1:{server.server_port}{PROVIDERS[kind][2]}", "tok")
        with pytest.raises(VcsError, match="not the JSON"):
            provider.open("https://forge.example/acme/calc.git", "astraforge/run-1", "main", "t", "b")
    finally:
        server.shutdown()
        server.server_close()


class _Hostile(_Garbled):
    """A forge (or a man in the middle) that names a script as the merge request's page."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        script = "javascript:alert(document.domain)"
        body = json.dumps({"html_url": script, "web_url": script, "number": 1, "iid": 1}).encode()
        self._send(201, body, "application/json")


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_a_merge_request_url_that_is_not_an_http_link_is_a_vcs_error(kind) -> None:
    """The URL becomes the run view's "Merge request" link and the alert's answer: a ``javascript:``
    URL from the forge used to be recorded as is, one click from running in the reviewer's page."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        provider = PROVIDERS[kind][0](f"http://127.0.0.1:{server.server_port}{PROVIDERS[kind][2]}", "tok")
        with pytest.raises(VcsError, match="not an http"):
            provider.open("https://forge.example/acme/calc.git", "astraforge/run-1", "main", "t", "b")
    finally:
        server.shutdown()
        server.server_close()
