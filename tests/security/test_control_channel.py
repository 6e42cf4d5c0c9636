"""Attacks on the control channel between the host and a sandbox's supervisor, made as the agent
would make them: commands sent through the public API, for docker and for bubblewrap.

What must hold: the supervisor runs as another user than the agent's commands, which cannot
signal it, reach its socket or the control directory, or replace either; the host talks only to
that sandbox's supervisor; no host path is visible inside; processes a command leaves behind are
recorded (``exec.detached``) and do not survive the sandbox; egress is attributed by the
supervisor, not by anything the command sends.
"""

import re
import secrets
from pathlib import Path

import httpx
import pytest

from astraforge.config import PROJECT_ROOT
from tests.integration.test_sandbox_api import create, post
from tests.security.conftest import Platform
from tests.support import auth, wait_until

SCRIPTS = Path(__file__).parent / "scripts"
FIND_SUPERVISOR = "grep -l supervisor.py /proc/[0-9]*/cmdline 2>/dev/null | head -n1 | cut -d/ -f3"


def run(platform: Platform, key: str, sandbox_id: str, command, **body) -> dict:
    r = post(f"{platform.api_url}/v1/sandboxes/{sandbox_id}/exec", key, {"command": command, **body})
    assert r.status_code == 200, r.text
    return r.json()


def upload(platform: Platform, key: str, sandbox_id: str, name: str, script: Path) -> None:
    r = httpx.put(
        f"{platform.api_url}/v1/sandboxes/{sandbox_id}/files/{name}", headers=auth(key), content=script.read_bytes()
    )
    assert r.status_code == 200, r.text


def events(platform: Platform, key: str, stream_id: str) -> list[dict]:
    r = httpx.get(f"{platform.api_url}/v1/streams/{stream_id}/events", headers=auth(key), params={"limit": 1000})
    return r.json()["items"]


def stop(platform: Platform, key: str, sandbox_id: str) -> None:
    base = f"{platform.api_url}/v1/sandboxes/{sandbox_id}"
    post(f"{base}/stop", key)
    wait_until(lambda: httpx.get(base, headers=auth(key)).json()["state"] == "terminated", timeout=60)


def host_processes_with(token: str) -> list[int]:
    """Host pids whose command line carries ``token`` (sandbox processes are visible from the host)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if token.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_a_command_cannot_point_the_control_socket_at_another_sandbox(platform: Platform) -> None:
    key_a, key_b = platform.tenant_key(), platform.tenant_key()
    a, b = create(platform.api_url, key_a)["id"], create(platform.api_url, key_b)["id"]
    b_socket = platform.processor.provider.control_root / platform.processor.state(b).runtime_id / "supervisor.sock"
    assert run(platform, key_a, a, "echo a > /workspace/i-am-a")["exit_code"] == 0

    # what mountinfo showed the agent: its own control dir on the host, and so the sibling of tenant B
    attack = run(
        platform,
        key_a,
        a,
        (
            f"ln -sfn {b_socket} /run/astraforge/new.sock"
            " && mv -f /run/astraforge/new.sock /run/astraforge/supervisor.sock"
            " && echo replaced"
        ),
    )
    assert attack["exit_code"] != 0 and "replaced" not in attack["stdout"], attack

    after = run(platform, key_a, a, "cat /workspace/i-am-a; touch /workspace/second")
    assert after["stdout"] == "a\n", "the next exec of A runs in A"
    assert after["command_id"] in {e["payload"].get("command_id") for e in events(platform, key_a, a)}
    assert run(platform, key_b, b, "ls -A /workspace")["stdout"] == "", "B received nothing of A's"
    for sid, key in ((a, key_a), (b, key_b)):
        stop(platform, key, sid)


def test_a_command_cannot_reach_the_supervisor_or_egress_socket(platform: Platform) -> None:
    key = platform.tenant_key()
    sid = create(platform.api_url, key, egress_allow=["GET allowed.example"])["id"]
    upload(platform, key, sid, "probe.py", SCRIPTS / "probe_control_sockets.py")
    probe = run(platform, key, sid, ["python3", "probe.py"])
    lines = probe["stdout"].splitlines()
    assert [line.split()[:2] for line in lines] == [["supervisor.sock", "refused"], ["egress.sock", "refused"]], probe
    assert all(line.split()[2] == "PermissionError" for line in lines), probe  # there, but not for the agent
    assert run(platform, key, sid, "ls /workspace")["stdout"] == "probe.py\n", "nothing ran unrecorded"
    stop(platform, key, sid)


def test_a_command_cannot_attach_to_another_running_command(platform: Platform) -> None:
    """Supervisor protocol 2 lets the host take a running command over (``attach``: its output from
    any offset, and it detaches whoever read it before). Only the host may: an agent's command that
    asks for it, through the supervisor's socket or the egress forwarder, gets neither the other
    command's output nor its reader, which records it to the end, each byte once."""
    key = platform.tenant_key()
    sid = create(platform.api_url, key, egress_allow=["GET allowed.example"])["id"]
    token = secrets.token_hex(8)
    victim = f"echo {token}-1; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo {token}-2"
    cid = run(platform, key, sid, victim, **{"async": True})["command_id"]
    wait_until(
        lambda: any(e["type"] == "exec.output" for e in events(platform, key, sid)), timeout=30, what="victim output"
    )
    upload(platform, key, sid, "attach.py", SCRIPTS / "attach_another_command.py")
    attack = run(platform, key, sid, ["python3", "attach.py", cid])
    lines = attack["stdout"].splitlines()
    assert lines[0] == "supervisor.sock refused PermissionError", attack
    assert lines[1].startswith("forwarder "), attack
    assert token not in attack["stdout"] + attack["stderr"], "the agent read another command's output"
    run(platform, key, sid, "touch /tmp/go")
    wait_until(
        lambda: any(
            e["type"] == "exec.finished" and e["payload"]["command_id"] == cid for e in events(platform, key, sid)
        ),
        timeout=30,
        what="the victim's end",
    )
    recorded = events(platform, key, sid)
    (finished,) = [e["payload"] for e in recorded if e["type"] == "exec.finished" and e["payload"]["command_id"] == cid]
    assert (finished["exit_code"], finished["error"]) == (0, None), finished
    output = [e["payload"] for e in recorded if e["type"] == "exec.output" and e["payload"]["command_id"] == cid]
    assert [o["seq"] for o in output] == list(range(len(output)))
    assert "".join(o["data"] for o in output) == f"{token}-1\n{token}-2\n", output
    stop(platform, key, sid)


def test_a_detached_survivor_is_recorded_cannot_forge_results_and_dies_with_the_sandbox(platform: Platform) -> None:
    key = platform.tenant_key()
    sid = create(platform.api_url, key)["id"]
    base = f"{platform.api_url}/v1/sandboxes/{sid}"
    upload(platform, key, sid, "forge.py", SCRIPTS / "forge_supervisor.py")
    token = str(100_000 + secrets.randbelow(800_000))
    started = run(
        platform,
        key,
        sid,
        (
            f"setsid python3 /workspace/forge.py {token} >/dev/null 2>&1 </dev/null & setsid sh -c 'sleep {token}' &"
            " echo started"
        ),
        timeout_sec=30,
    )
    assert started["stdout"] == "started\n" and started["exit_code"] == 0, started

    detached = [e["payload"] for e in events(platform, key, sid) if e["type"] == "exec.detached"]
    assert {d["command_id"] for d in detached} == {started["command_id"]}, detached
    argvs = [" ".join(d["argv"]) for d in detached]
    assert any("forge.py" in a for a in argvs) and any(f"sleep {token}" in a for a in argvs), argvs
    assert all(isinstance(d["pid"], int) and d["pid"] > 1 for d in detached)

    def forger_has_tried() -> bool:
        out = run(platform, key, sid, "cat /tmp/forge.tries")["stdout"].strip()
        return out in ("REAL", "taken") or (out.isdigit() and int(out) >= 3)

    wait_until(forger_has_tried, timeout=30, what="the forger's attempts")
    real = run(platform, key, sid, "rm -rf /workspace/*; echo gone > /workspace/effect; ls -A /workspace")
    assert (real["stdout"], real["exit_code"]) == ("effect\n", 0), real
    effect = httpx.get(f"{base}/files/effect", headers=auth(key))
    assert effect.status_code == 200 and effect.content == b"gone\n", "the command's effect is real"
    assert run(platform, key, sid, "cat /tmp/forge.tries")["stdout"].strip().isdigit(), "the forger never got in"

    assert host_processes_with(f"sleep {token}"), "the survivor runs until the sandbox stops"
    stop(platform, key, sid)
    wait_until(lambda: not host_processes_with(token), timeout=30, what="survivors to die with the sandbox")


def test_the_supervisor_is_another_user_that_commands_cannot_kill_or_trace(platform: Platform) -> None:
    key = platform.tenant_key()
    sid = create(platform.api_url, key)["id"]
    probe = run(
        platform,
        key,
        sid,
        (
            f"pid=$({FIND_SUPERVISOR}); echo me=$(id -u);"
            " echo supervisor=$(awk '/^Uid:/ {print $2}' /proc/$pid/status);"
            " kill -9 $pid 2>/dev/null; echo kill=$?;"
            ' python3 -c "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True);'
            " print('ptrace=%d' % libc.ptrace(16, int(sys.argv[1]), 0, 0))\" $pid"
        ),
    )
    values = dict(line.split("=", 1) for line in probe["stdout"].split())
    assert values["me"] == "1000" and values["supervisor"] not in ("", values["me"]), probe
    assert values["kill"] != "0" and values["ptrace"] == "-1", probe
    assert run(platform, key, sid, "echo alive")["stdout"] == "alive\n"
    stop(platform, key, sid)


def test_no_host_path_is_visible_in_mountinfo(platform: Platform) -> None:
    key = platform.tenant_key()
    sid = create(platform.api_url, key)["id"]
    provider = platform.processor.provider
    host_paths = {
        str(p)
        for p in (
            platform.settings.state_dir,
            platform.settings.cache_dir,
            PROJECT_ROOT,
            provider.runtime,
            provider.control_root,
        )
    } | {"/var/tmp/astraforge"}
    shown = run(platform, key, sid, f"cat /proc/self/mountinfo /proc/1/mountinfo /proc/$({FIND_SUPERVISOR})/mountinfo")
    lines = shown["stdout"].splitlines()
    assert len(lines) > 10, shown
    for line in lines:
        fields = line.split()
        if platform.provider == "docker" and fields[4] == "/" and fields[-3] == "overlay":
            line = " ".join(fields[:-1])  # documented exception: the engine's overlay layers in the root's options
        leaked = [p for p in host_paths if p in line]
        assert not leaked, f"{leaked} visible inside: {line}"
        assert not re.search(r"/(sandboxes|containers|overlay2)/", line), line
    stop(platform, key, sid)


@pytest.mark.parametrize("via", ["own forwarder", "shared port"])
def test_egress_attribution_cannot_be_forged(platform: Platform, via: str) -> None:
    key = platform.tenant_key()
    sid = create(platform.api_url, key, egress_allow=["GET allowed.example"])["id"]
    victim = run(platform, key, sid, "true")["command_id"]
    upload(platform, key, sid, "forge.py", SCRIPTS / "forged_proxy_user.py")
    proxy = "$HTTP_PROXY" if via == "own forwarder" else "http://127.0.0.1:3128"
    forged = run(platform, key, sid, f"python3 forge.py {victim} {proxy}")
    assert forged["stdout"] == "403\n", forged

    def denied() -> list[dict]:
        return [e["payload"] for e in events(platform, key, sid) if e["type"] == "egress.denied"]

    wait_until(lambda: denied(), timeout=20, what="the egress.denied record")
    (record,) = denied()
    expected = forged["command_id"] if via == "own forwarder" else None
    assert record["command_id"] == expected != victim, record
    stop(platform, key, sid)
