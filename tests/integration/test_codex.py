"""The real Codex CLI in a sandbox, driven by the scripted model server through the egress proxy.

The sandbox is created as the run orchestrator creates one (a ``sandbox.create`` of the platform's,
granting the ``model-gateway`` upstream: a tenant cannot grant it); everything else goes through
the public API: a tiny repository is copied in, ``codex exec --json`` runs as an exec, and the
sandbox's stream holds what the supervisor saw. The model server runs on the operator's gateway
address (tests/conftest.py), and answers each turn only after the test has searched the sandbox
for the gateway's real key: every process's environment and command line, and every file of its
writable mounts, looked at from the host while Codex waits for the model.
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
from astraforge.schemas import Envelope, default_codec
from astraforge.schemas.sandbox_spec import RequestedSandbox
from tests.conftest import GATEWAY_SECRET, gateway_listener
from tests.integration.test_sandbox_api import post
from tests.modelserver import ModelServer, Recorded, Turn, apply_patch, exec_command, message
from tests.support import auth, wait_until

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
    Turn((exec_command("python -c 'import calc; print(calc.add(2, 3))'"),)),
    Turn((apply_patch(FIX),)),
    Turn((exec_command("python -c 'import calc; assert calc.add(2, 3) == 5; print(\"ok\")'"),)),
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


def sandbox_pids(init_pid: int) -> list[int]:
    """Every process in the sandbox (its pid namespace), seen from the host."""
    namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    pids.append(int(entry))
            except OSError:
                continue  # exited meanwhile
    return pids


def leaks(init_pid: int, secret: bytes) -> tuple[list[str], list[str]]:
    """Where ``secret`` is in the sandbox (environments, command lines, files of its writable
    mounts), and the command lines of its processes."""
    found, commands = [], []
    for pid in sandbox_pids(init_pid):
        for part in ("environ", "cmdline"):
            try:
                data = Path(f"/proc/{pid}/{part}").read_bytes()
            except OSError:
                continue
            if secret in data:
                found.append(f"/proc/{pid}/{part}")
            if part == "cmdline":
                commands.append(data.replace(b"\0", b" ").decode(errors="replace"))
    root = Path(f"/proc/{init_pid}/root")
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


def test_codex_edits_the_repository_through_the_gateway_and_never_sees_its_key(
    api_url, sandbox, tenant, docker_provider
) -> None:
    _, key = tenant
    base = f"{api_url}/v1/sandboxes/{sandbox}"
    for name, text in REPO.items():
        assert httpx.put(f"{base}/files/{name}", headers=auth(key), content=text.encode()).status_code == 200
    git = "git init -q && git add -A && git -c user.name=t -c user.email=t@example.com commit -qm init"
    assert post(f"{base}/exec", key, {"command": git}).json()["exit_code"] == 0

    init_pid = docker_provider.client.containers.get(f"af-{sandbox}").attrs["State"]["Pid"]
    secret = GATEWAY_SECRET.encode()
    searches: list[list[str]] = []  # each model request: the sandbox's command lines, searched

    def search_sandbox(_: Recorded) -> None:
        found, commands = leaks(init_pid, secret)
        assert not found, f"the gateway key is in the sandbox: {found}"
        searches.append(commands)

    run_id = f"run-{secrets.token_hex(8)}"
    invocation = codex_invocation("Fix add() in calc.py and check it.", run_id)
    with ModelServer(SCRIPT, listener=gateway_listener(), on_request=search_sandbox) as server:
        for path, content in invocation.files.items():
            r = httpx.put(f"{base}/files/{path}", headers=auth(key), content=content)
            assert r.status_code == 200, r.text
        body = {"command": invocation.argv, "env": invocation.env, "cwd": invocation.cwd, "timeout_sec": 300}
        result = post(f"{base}/exec", key, body, timeout=330).json()
    assert not server.script.errors, server.script.errors
    assert result["exit_code"] == 0, result["stderr"][-3000:]

    # the edit landed, as Codex's patch wrote it
    assert httpx.get(f"{base}/files/calc.py", headers=auth(key)).text == "def add(a, b):\n    return a + b\n"

    # the server got every turn with the real key; the sandbox only ever held the placeholder, and
    # was searched while Codex itself was running (its process waiting on each answer)
    assert len(server.requests) == len(SCRIPT)
    assert {r.headers.get("authorization") for r in server.requests} == {f"Bearer {GATEWAY_SECRET}"}
    assert len(searches) == len(SCRIPT)
    assert all(any("/usr/local/bin/codex exec" in c for c in commands) for commands in searches)
    assert placeholder_token(run_id) in invocation.env.values()

    # what the supervisor recorded: the exec's stdout, read back from the stream, translates into records
    events = stream_events(api_url, key, sandbox)
    command_id = result["command_id"]
    translator = CodexTranslator(command_id)
    records: list[AgentRecord] = []
    for e in events:
        if e["type"] == "exec.output" and (e["payload"]["command_id"], e["payload"]["stream"]) == (
            command_id,
            "stdout",
        ):
            records += translator.feed(data_of(e["payload"]))
    records += translator.close()
    assert translator.skipped == 0
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
        codec.encode(Envelope(type=r.type, stream_id=sandbox, tenant_id="t", actor=AGENT, payload=r.payload))

    # the gateway was reached through the egress proxy, by Codex's exec, with the key added there
    # (and nowhere else: no plugin marketplace, analytics or update check)
    egress = [(e["type"], e["payload"]) for e in events if e["type"].startswith("egress.")]
    assert len(egress) == len(SCRIPT) and {t for t, _ in egress} == {"egress.allowed"}, egress
    for _, e in egress:
        assert (e["host"], e["method"], e["url"]) == ("model-gateway", "POST", "http://model-gateway/v1/responses")
        assert e["credential_injected"] and e["command_id"] == command_id
