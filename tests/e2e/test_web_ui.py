"""The web UI end to end in real Chromium (Debian's, driven by playwright-core) against the real
platform: API + projector + run orchestrator + sandbox processor (docker) on the session's topics.

The browser work is in web/e2e/*.mjs (Node, where playwright-core lives); this module starts the
platform, builds the UI (cached), installs Chromium when missing, runs the script and reports what
it printed. Screenshots are saved under test-results/web-e2e/ (CI keeps them as artifacts).
"""

import fcntl
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from astraforge.processors.alerts.processor import AlertsProcessor
from astraforge.processors.runs.orchestrator import RunOrchestrator
from tests.alert_payloads import body_bytes, event_alert, sentry_headers
from tests.conftest import gateway_listener
from tests.modelserver import ModelServer, Turn, message, tool_call
from tests.runs_support import bare_repository, post, wait_state
from tests.support import auth, running_api

ROOT = Path(__file__).resolve().parents[2]
WEB_SH = ROOT / "deploy" / "local" / "web.sh"
CALC = "def add(a, b):\n    return a + b\n"
ARTIFACTS = Path(os.environ.get("ASTRAFORGE_TEST_ARTIFACTS", ROOT / "test-results")) / "web-e2e"


def _web_sh(command: str) -> str:
    done = subprocess.run(["bash", str(WEB_SH), command], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"web.sh {command} failed:\n{done.stderr[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def web_dist() -> Iterator[Path]:
    """The built UI, held as a server holds it (a shared flock on the directory, see web.sh): a build
    made meanwhile by another checkout sharing the cache does not prune it from under the tests."""
    dist = Path(_web_sh("build"))
    fd = os.open(dist, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield dist
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def chromium() -> str:
    return _web_sh("browser")


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("repos")
    return {"calc": bare_repository(root / "allowed"), "pattern": f"{root / 'allowed'}/*.git"}


@pytest.fixture(scope="module")
def platform(settings, repos, projector, sandbox_processor, web_dist, tmp_path_factory) -> Iterator[str]:
    """The API serving the built UI, with the orchestrator running runs on the session's sandboxes and
    the alerts processor turning alerts into runs."""
    run_settings = settings.model_copy(update={"repo_allowlist": {"*": [repos["pattern"]]}, "web_dist": web_dist})
    services = [RunOrchestrator(run_settings, work_dir=tmp_path_factory.mktemp("runs-work")),
                AlertsProcessor(run_settings, tick_s=0.3)]  # fmt: skip
    threads = [threading.Thread(target=s.run, daemon=True) for s in services]
    for thread in threads:
        thread.start()
    try:
        with running_api(run_settings, sse_ping_s=1.0) as url:
            yield url
    finally:
        for s in services:
            s.stop()
        for thread in threads:
            thread.join(timeout=30)


def node_env(chromium: str, **env: str) -> dict[str, str]:
    return {**os.environ, "CHROMIUM": chromium, "ARTIFACTS": str(ARTIFACTS), **env}


def run_script(script: str, chromium: str, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["node", f"e2e/{script}"],
        cwd=ROOT / "web",
        env=node_env(chromium, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(done.stdout, done.stderr)
    return done


def sentry_integration(platform: str, key: str, repos: dict, name: str, secret: str) -> dict:
    """A Sentry integration of the tenant whose alerts start a script run fixing calc.py."""
    body = {
        "kind": "sentry",
        "name": name,
        "client_secret": secret,
        "organization": "acme",
        "projects": {"calc-service": {"repository": str(repos["calc"])}},
        "agent": "script",
        "steps": [{"write": "calc.py", "content": CALC}],
        "writable_paths": ["calc.py"],
    }
    made = httpx.post(f"{platform}/v1/integrations", json=body, headers=auth(key), timeout=30)
    assert made.status_code == 201, made.text
    return made.json()


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


def test_chat_with_a_deepagent_streams_its_reply_shows_its_tool_call_and_the_file_it_wrote(
    platform, conversations, tenant, chromium
) -> None:
    """The new-conversation form, a message, the write_file call with its result, the reply's text
    while it streams (the model holds the turn after its first token until the browser has shown it:
    the script prints STREAMING), the settled reply, a second reply cancelled mid-stream, and the file
    read back in the sandbox console."""
    _, key = tenant
    hold, never = threading.Event(), threading.Event()
    script = [
        Turn((tool_call("write_file", {"file_path": "/workspace/calc.py", "content": CALC}),)),
        Turn((message("calc.py is written and adds two numbers."),), pause=hold),
        Turn((message("One, two, three and so on for a long while."),), pause=never),  # cancelled in the page
    ]
    with (
        ModelServer(script, listener=gateway_listener()),
        subprocess.Popen(
            ["node", "e2e/conversation.mjs"],
            cwd=ROOT / "web",
            env=node_env(chromium, API_URL=platform, API_KEY=key),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as node,
    ):
        lines = []
        try:
            for line in node.stdout:
                lines.append(line)
                if line.strip() == "STREAMING":
                    hold.set()
            node.wait(timeout=600)
        finally:
            hold.set()  # never leave the model server holding a turn
            never.set()
            if node.poll() is None:
                node.kill()
    output = "".join(lines)
    print(output)
    assert hold.is_set() and "STREAMING\n" in lines, "the browser never showed the reply mid-stream"
    assert node.returncode == 0, output[-4000:]
    assert (ARTIFACTS / "21-conversation-streaming.png").stat().st_size > 0


def test_alerts_page_shows_a_sentry_alert_and_opens_the_run_it_started(platform, repos, tenant, chromium) -> None:
    """A signed Sentry alert delivered to an integration; the alerts page shows it decided "run
    started" with a link that opens that run's view, and no secret of the integration on the page."""
    _, key = tenant
    secret = "sentry-client-secret-web-e2e-0123456789"
    made = sentry_integration(platform, key, repos, "calc in production", secret)
    alert = body_bytes(event_alert("4242"))
    headers = sentry_headers(secret, alert, "event_alert")
    sent = httpx.post(platform + made["webhook_path"], content=alert, headers=headers, timeout=30)
    assert sent.status_code == 202, sent.text
    done = run_script("alerts.mjs", chromium, API_URL=platform, API_KEY=key, CLIENT_SECRET=secret)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (ARTIFACTS / "31-alerts.png").stat().st_size > 0


def test_the_next_tenant_in_the_same_tab_sees_nothing_of_the_one_who_signed_out(
    platform, repos, tenant, other_tenant, chromium
) -> None:
    """Sign-out removed the key but kept the tab's query cache: the next tenant to sign in was shown
    the previous tenant's integrations (its runs, sandboxes...) until their own answer arrived, and
    kept them on screen if it failed. The script holds B's request to catch that first paint."""
    _, key = tenant
    _, other_key = other_tenant
    name = "tenant A's private integration"
    sentry_integration(platform, key, repos, name, "sentry-client-secret-signout-0123456789")
    done = run_script("signout.mjs", chromium, API_URL=platform, API_KEY=key, OTHER_API_KEY=other_key,
                      INTEGRATION_NAME=name)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]


def test_a_hostile_alert_title_runs_no_script_and_the_csp_blocks_inline_script(
    platform, repos, tenant, chromium
) -> None:
    """Whoever can raise an error in production chooses the Sentry alert's title: markup in it is
    shown as text on the alerts page, no handler runs, and the page's CSP blocks inline script."""
    _, key = tenant
    secret = "sentry-client-secret-web-xss-0123456789"
    made = sentry_integration(platform, key, repos, "calc hostile", secret)
    payload = "<img src=x onerror=\"window.__pwned='img';alert(1)\"><script>window.__pwned='script'</script>"
    alert = event_alert("4343")
    alert["data"]["event"]["title"] = payload
    raw = body_bytes(alert)
    headers = sentry_headers(secret, raw, "event_alert")
    sent = httpx.post(platform + made["webhook_path"], content=raw, headers=headers, timeout=30)
    assert sent.status_code == 202, sent.text
    done = run_script("xss.mjs", chromium, API_URL=platform, API_KEY=key)
    assert done.returncode == 0, done.stderr[-4000:]


def script_run(platform: str, key: str, repo: Path, title: str, steps: list[dict], spec: str = "Fix add().") -> str:
    """A script-agent run submitted through the API; its id once it awaits review."""
    body = {"title": title, "spec": spec, "repository": str(repo), "agent": "script", "steps": steps}
    made = post(f"{platform}/v1/requests", key, body, **{"Idempotency-Key": str(uuid.uuid4())})
    assert made.status_code in (200, 201, 202), made.text
    run_id = made.json()["id"]
    wait_state(platform, key, run_id, ("awaiting_review",))
    return run_id


def test_everything_by_keyboard_alone_with_visible_focus_confirmations_and_focus_on_page_changes(
    platform, repos, conversations, tenant, chromium
) -> None:
    """Tab, Shift+Tab, Enter, Space, Escape and arrows only: sign in, the runs list, a run (both diff
    layouts, the rerun dialog closed with focus back on its button, a reject and a cancel
    declined in their confirmations, approval), a sandbox (a console command, Stop confirmed), a conversation (a message
    and its reply). Every Tab stop draws a focus indicator; every page change focuses and announces
    its heading."""
    _, key = tenant
    title = "Keyboard only fix"
    run_id = script_run(platform, key, repos["calc"], title, [{"write": "calc.py", "content": CALC}])
    reply = "Hello, keyboard."
    with ModelServer([Turn((message(reply),))], listener=gateway_listener()):
        done = run_script("keyboard.mjs", chromium, API_URL=platform, API_KEY=key, RUN_ID=run_id, RUN_TITLE=title,
                          REPLY=reply)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert (ARTIFACTS / "64-keyboard-conversation.png").stat().st_size > 0


MARKUP = (
    "<img src=x onerror=\"window.__pwned='img'\"><script>window.__pwned='script'</script>"
    "<a href=\"javascript:window.__pwned='link'\">link</a>"
)
RTL, ANSI = "\u202e", "\x1b[31mred\x1b[0m"
LONG = "A" * 3000  # one word, no place to break


def test_hostile_agent_and_tenant_content_is_shown_as_text_and_runs_no_script(
    platform, repos, conversations, tenant, chromium
) -> None:
    """Markup, javascript: links, a right-to-left override, ANSI escapes and a 3,000-character word,
    put through the public API where agents and tenants write what the UI shows: a run's title and
    request, its commands and their output, a file it wrote named like an <img> tag with such content
    (the highlighted diff), a sandbox console's command and output, a conversation's title, messages,
    tool call and result. Every page shows it as text with the invisible characters marked, runs no
    script and is no wider than the window."""
    _, key = tenant
    hostile = f"{MARKUP} {ANSI} {RTL}evil {LONG}\n"
    steps = [
        {
            "write": f"<img src=x onerror=window.__pwned=1>{RTL}gnp.js",
            "content": f"const s = '{MARKUP}';\n// {ANSI} {RTL}x\n",
        },
        {"write": "hostile.txt", "content": hostile},
        {"run": "echo '<img src=x onerror=window.__pwned=2>' && cat hostile.txt"},
    ]
    run_id = script_run(platform, key, repos["calc"], f"{MARKUP} {RTL}title", steps, spec=hostile)
    sandbox = post(f"{platform}/v1/sandboxes", key, {}, **{"Idempotency-Key": str(uuid.uuid4())})
    assert sandbox.status_code in (200, 201, 202), sandbox.text
    tool_args = {"file_path": f"/workspace/{MARKUP[:40]}{RTL}.txt", "content": hostile}
    script = [Turn((tool_call("write_file", tool_args),)), Turn((message(f"Done: {MARKUP} {RTL}gnp.exe"),))]
    with ModelServer(script, listener=gateway_listener()):
        made = post(f"{platform}/v1/conversations", key, {"model": "stub-model", "title": f"{MARKUP} {RTL}chat"},
                    **{"Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
        assert made.status_code in (200, 201, 202), made.text
        conversation_id = made.json()["id"]
        sent = post(f"{platform}/v1/conversations/{conversation_id}/messages", key, {"text": hostile},
                    **{"Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
        assert sent.status_code in (200, 201, 202), sent.text
        done = run_script("hostile.mjs", chromium, API_URL=platform, API_KEY=key, RUN_ID=run_id,
                          SANDBOX_ID=sandbox.json()["id"], CONVERSATION_ID=conversation_id)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
