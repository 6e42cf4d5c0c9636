"""The real Codex CLI in a sandbox, driven by the scripted model server through the egress proxy.

The sandbox is created as the run orchestrator creates one (a ``sandbox.create`` of the platform's,
granting the ``model-gateway`` upstream: a tenant cannot grant it); everything else goes through
the public API: a tiny repository is copied in, ``codex exec --json`` runs as an exec, and the
sandbox's stream holds what the supervisor saw. The model server runs on the operator's gateway
address (tests/conftest.py), and answers each turn only after the test has searched the sandbox
for the gateway's real key: every process's environment and command line, and every file of its
writable mounts, looked at from the host while Codex waits for the model.

The same session also runs in a bubblewrap sandbox, on the provider and the egress proxy directly.
"""

import base64
import json
import os
import secrets
from pathlib import Path

import httpx
import pytest

from astraforge.processors.runs.executors.codex import (
    AGENT,
    AgentRecord,
    CodexTranslator,
    codex_invocation,
    placeholder_token,
)
from astraforge.sandbox.egress import EgressDecision, EgressProxy, PlatformUpstream
from astraforge.sandbox.profile import SUPERVISOR_PATH, SecurityProfile
from astraforge.sandbox.providers.base import SandboxSpec
from astraforge.schemas import Envelope, default_codec
from astraforge.schemas.sandbox_spec import RequestedSandbox
from tests.conftest import GATEWAY_PORT, GATEWAY_SECRET, gateway_listener
from tests.integration.test_sandbox_api import post
from tests.modelserver import ModelServer, Recorded, Turn, apply_patch, exec_command, message
from tests.support import auth, wait_until

PROMPT = "Fix add() in calc.py and check it."
GIT_INIT = "git init -q && git add -A && git -c user.name=t -c user.email=t@example.com commit -qm init"
FIXED = "def add(a, b):\n    return a + b\n"
REPO = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "README.md": "# calc\n\nAdds numbers.\n",
}
FIX = """*** Begin Patch
*** Update File: calc.py
@@
 def add(a, b):
-    return a - b
+    return a + b
*** End Patch
"""
SCRIPT = [
    Turn((exec_command("python -B -c 'import calc; print(calc.add(2, 3))'"),)),
    Turn((apply_patch(FIX),)),
    Turn((exec_command("python -B -c 'import calc; assert calc.add(2, 3) == 5; print(\"ok\")'"),)),
    Turn((message("Fixed add(): it subtracted."),)),
]
# the paths of the sandbox a leaked key could be written to: its writable mounts (the root is read-only)
WRITABLE = ("workspace", "tmp", "home/sandbox")


def granted_sandbox(producer, api_url: str, tenant_id: str, key: str, image: str) -> str:
    """A sandbox created as the platform creates a run's: the gateway granted, which only a platform
    record can do (the public API refuses a tenant's ``platform_upstreams``)."""
    sid = f"sb-{secrets.token_hex(16)}"
    spec = RequestedSandbox(image, {"memory_mb": 1024}, platform_upstreams=("model-gateway",))
    create = Envelope(
        type="sandbox.create",
        stream_id=sid,
        tenant_id=tenant_id,
        actor="processor:runs",
        sandbox_id=sid,
        payload=spec.create_payload(),
    )
    producer.append_many([create])
    url = f"{api_url}/v1/sandboxes/{sid}"
    ready = lambda: (r := httpx.get(url, headers=auth(key))).status_code == 200 and r.json()["state"] == "ready"  # noqa: E731
    wait_until(ready, timeout=90, what=f"{sid} ready")
    return sid


def sandbox_pids(pid_ns: str) -> list[int]:
    """Every process in the sandbox (its pid namespace, ``pid:[inode]``), seen from the host."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == pid_ns:
                    pids.append(int(entry))
            except OSError:
                continue  # exited meanwhile
    return pids


def leaks(pid_ns: str, secret: bytes) -> tuple[list[str], list[str]]:
    """Where ``secret`` is in the sandbox (environments, command lines, files of its writable
    mounts), and the command lines of its processes."""
    found, commands, supervisor = [], [], None
    for pid in sandbox_pids(pid_ns):
        for part in ("environ", "cmdline"):
            try:
                data = Path(f"/proc/{pid}/{part}").read_bytes()
            except OSError:
                continue
            if secret in data:
                found.append(f"/proc/{pid}/{part}")
            if part == "cmdline":
                commands.append(data.replace(b"\0", b" ").decode(errors="replace"))
                supervisor = pid if SUPERVISOR_PATH.encode() in data else supervisor
    assert supervisor is not None, commands
    root = Path(f"/proc/{supervisor}/root")  # the sandbox's mounts, through its longest-lived process
    for mount in WRITABLE:
        for directory, _, files in os.walk(root / mount):
            for name in files:
                path = Path(directory) / name
                try:
                    if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                        found.append(str(path.relative_to(root)))
                except OSError:
                    continue
    return found, commands


def stream_events(api_url: str, key: str, sid: str) -> list[dict]:
    r = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000})
    return r.json()["items"]


def data_of(payload: dict) -> bytes:
    data = payload["data"]
    return base64.b64decode(data["base64"]) if isinstance(data, dict) else data.encode()


@pytest.fixture
def sandbox(api_url, sandbox_processor, producer, tenant, settings):
    tenant_id, key = tenant
    sid = granted_sandbox(producer, api_url, tenant_id, key, settings.sandbox_image)
    yield sid
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


class KeySearch:
    """Searches the sandbox for the gateway's key on each model request (the model server's hook):
    Codex is running then, waiting for the answer."""

    def __init__(self, pid_ns: str) -> None:
        self.pid_ns = pid_ns
        self.searches: list[list[str]] = []  # per request: the sandbox's command lines, searched

    def __call__(self, _: Recorded) -> None:
        found, commands = leaks(self.pid_ns, GATEWAY_SECRET.encode())
        assert not found, f"the gateway key is in the sandbox: {found}"
        self.searches.append(commands)


def check_session(server: ModelServer, search: KeySearch, records: list[AgentRecord], stream_id: str) -> None:
    """What every Codex session of ``SCRIPT`` must show, whichever provider ran it."""
    # the server got every turn with the real key; the sandbox only ever held the placeholder, and
    # was searched while Codex itself was running (its process waiting on each answer)
    assert not server.script.errors, server.script.errors
    assert len(server.requests) == len(SCRIPT)
    assert {r.headers.get("authorization") for r in server.requests} == {f"Bearer {GATEWAY_SECRET}"}
    assert len(search.searches) == len(SCRIPT)
    assert all(any("/usr/local/bin/codex exec" in c for c in commands) for commands in search.searches)

    # Codex's JSONL, as the supervisor saw it, translates into the session's records
    summary = [
        (r.type, r.payload.get("name") or r.payload.get("role") or r.payload.get("files") or r.payload.get("output"))
        for r in records
        if r.type != "agent.usage"
    ]
    assert summary == [
        ("tool.called", "command"),
        ("tool.result", "-1\n"),
        ("diff.produced", ["calc.py"]),
        ("tool.called", "command"),
        ("tool.result", "ok\n"),
        ("chat.message", "agent"),
    ], summary
    assert "calc.add(2, 3)" in json.loads(records[0].payload["arguments_json"])["command"]
    assert records[5].payload["text"] == "Fixed add(): it subtracted."
    (usage,) = [r.payload for r in records if r.type == "agent.usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (120 * len(SCRIPT), 30 * len(SCRIPT))
    codec = default_codec()
    for r in records:  # each is a valid record of the event language
        codec.encode(Envelope(type=r.type, stream_id=stream_id, tenant_id="t", actor=AGENT, payload=r.payload))


def test_codex_edits_the_repository_through_the_gateway_and_never_sees_its_key(
    api_url, sandbox, tenant, sandbox_processor
) -> None:
    _, key = tenant
    base = f"{api_url}/v1/sandboxes/{sandbox}"
    for name, text in REPO.items():
        assert httpx.put(f"{base}/files/{name}", headers=auth(key), content=text.encode()).status_code == 200
    assert post(f"{base}/exec", key, {"command": GIT_INIT}).json()["exit_code"] == 0

    search = KeySearch(sandbox_processor.provider.handle(sandbox).peer.pid_ns)
    run_id = f"run-{secrets.token_hex(8)}"
    invocation = codex_invocation(PROMPT, run_id)
    assert placeholder_token(run_id) in invocation.env.values()
    with ModelServer(SCRIPT, listener=gateway_listener(), on_request=search) as server:
        for path, content in invocation.files.items():
            r = httpx.put(f"{base}/files/{path}", headers=auth(key), content=content)
            assert r.status_code == 200, r.text
        body = {"command": invocation.argv, "env": invocation.env, "cwd": invocation.cwd, "timeout_sec": 300}
        result = post(f"{base}/exec", key, body, timeout=330).json()
    assert result["exit_code"] == 0, result["stderr"][-3000:]
    assert httpx.get(f"{base}/files/calc.py", headers=auth(key)).text == FIXED  # the edit landed

    # what the supervisor recorded: the exec's stdout, read back from the stream
    events = stream_events(api_url, key, sandbox)
    command_id = result["command_id"]
    translator = CodexTranslator(command_id)
    outputs = [e["payload"] for e in events if e["type"] == "exec.output"]
    records = [
        r
        for o in outputs
        if (o["command_id"], o["stream"]) == (command_id, "stdout")
        for r in translator.feed(data_of(o))
    ] + translator.close()
    assert translator.skipped == 0
    check_session(server, search, records, sandbox)

    # the gateway was reached through the egress proxy, by Codex's exec, with the key added there
    # (and nowhere else: no plugin marketplace, analytics or update check)
    egress = [(e["type"], e["payload"]) for e in events if e["type"].startswith("egress.")]
    assert len(egress) == len(SCRIPT) and {t for t, _ in egress} == {"egress.allowed"}, egress
    for _, e in egress:
        assert (e["host"], e["method"], e["url"]) == ("model-gateway", "POST", "http://model-gateway/v1/responses")
        assert e["credential_injected"] and e["command_id"] == command_id


def test_codex_runs_in_a_bubblewrap_sandbox_too(bwrap_provider) -> None:
    """The daemonless provider: the same session on the provider and the egress proxy themselves
    (the processor drives whichever provider the platform has; the API test above is docker's)."""
    decisions: list[EgressDecision] = []
    proxy = EgressProxy(
        {"model-gateway": f"Authorization: Bearer {GATEWAY_SECRET}"},
        lambda _, decision: decisions.append(decision),
        upstreams={"model-gateway": PlatformUpstream("model-gateway", "127.0.0.1", GATEWAY_PORT)},
    )
    proxy.start()
    sid = f"sb-{secrets.token_hex(16)}"
    handle = bwrap_provider.create(SandboxSpec(sid, profile=SecurityProfile(memory_mb=1024)))
    try:
        proxy.serve(sid, handle.control_dir / "egress.sock", [], ("model-gateway",))
        client = handle.client
        for name, text in REPO.items():
            client.write(f"/workspace/{name}", text.encode())
        assert client.exec(shell=GIT_INIT, cwd="/workspace").exit_code == 0
        invocation = codex_invocation(PROMPT, "run-bwrap")
        for path, content in invocation.files.items():
            client.write(path, content, mode=0o600)
        search = KeySearch(handle.peer.pid_ns)
        stdout = CodexTranslator("codex-1")
        records: list[AgentRecord] = []

        def on_output(stream: str, data: bytes) -> None:
            if stream == "stdout":
                records.extend(stdout.feed(data))

        with ModelServer(SCRIPT, listener=gateway_listener(), on_request=search) as server:
            result = client.exec(
                argv=invocation.argv,
                cwd=invocation.cwd,
                env=invocation.env,
                timeout_s=300,
                request_id="codex-1",
                on_output=on_output,
                egress=True,
            )
        assert result.exit_code == 0
        assert client.read("/workspace/calc.py").decode() == FIXED
        check_session(server, search, records + stdout.close(), sid)
        assert [(d.host, d.allowed, d.credential_injected, d.command_id) for d in decisions] == [
            ("model-gateway", True, True, "codex-1")
        ] * len(SCRIPT)
    finally:
        proxy.close(sid)
        proxy.stop()
        bwrap_provider.stop(sid)
