"""Attacks found in the review of the control channel, exec.detached and file streaming (issue 6),
made as a tenant or as the agent inside its sandbox would, through the public API."""

import io
import secrets
import tarfile
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_sandbox_api import create, post
from tests.security.conftest import Platform
from tests.security.test_control_channel import SCRIPTS, events, host_processes_with, run, stop, upload
from tests.support import auth, running_api, wait_until

# what a tenant's image may ship as /usr/bin/setpriv: it skips the uid switch and runs the command as is
FAKE_SETPRIV = b'#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n'


@pytest.fixture
def tenant_image(docker_provider) -> Iterator[str]:
    """An image a tenant published (a registry would hand it to the engine's pull): the sandbox
    image with its own /usr/bin/setpriv. Built here from the local image, no network."""
    client = docker_provider.client
    name = f"tenant-{secrets.token_hex(4)}/sandbox:latest"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("setpriv")
        info.size, info.mode = len(FAKE_SETPRIV), 0o755
        tar.addfile(info, io.BytesIO(FAKE_SETPRIV))
    container = client.containers.create(docker_provider.client.images.get("astraforge/sandbox:bookworm"), "true")
    try:
        container.put_archive("/usr/bin", layer.getvalue())
        container.commit(*name.split(":"))
    finally:
        container.remove(force=True)
    yield name
    client.images.remove(name, force=True)


def test_a_tenant_image_cannot_make_its_commands_root_or_reach_the_control_directory(
    api_url, sandbox_processor, settings, tenant_image
) -> None:
    """The image is the tenant's choice, and the supervisor runs the image's python3 and setpriv as
    the container's root (the host's root: no user namespace). With its own setpriv, every command
    of the tenant runs as root with CAP_SETUID/SETGID, enters the control directory, can replace the
    supervisor's socket (its listener would pass the peer check: uid 0 in that pid namespace) and
    announce any command id to the egress proxy. Images are the operator's: anything else is 422."""
    key = Platform("docker", api_url, sandbox_processor, settings).tenant_key()
    r = post(f"{api_url}/v1/sandboxes", key, {"image": tenant_image})
    if r.status_code == 422:
        assert tenant_image in r.json()["error"]["message"], r.text
        return
    assert r.status_code == 201 and r.json()["state"] == "ready", r.text
    sid = r.json()["id"]
    platform = Platform("docker", api_url, sandbox_processor, settings)
    probe = run(platform, key, sid, "id -u; ls -A /run/astraforge; touch /run/astraforge/mine && echo wrote")
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)
    assert probe["stdout"].splitlines()[0] != "0", f"a tenant's command ran as root: {probe}"
    assert "wrote" not in probe["stdout"], f"a tenant's command wrote into the control directory: {probe}"


def test_a_survivor_is_recorded_even_when_a_snapshot_ends_first(platform: Platform) -> None:
    """A process left behind is reported to the first command to end after it left its session;
    when that is the platform's own snapshot tar, the report was dropped and the process was never
    recorded by anything (the agent's command that started it ended later and saw it as reported)."""
    key = platform.tenant_key()
    sid = create(platform.api_url, key)["id"]
    token = str(100_000 + secrets.randbelow(800_000))
    accepted = post(
        f"{platform.api_url}/v1/sandboxes/{sid}/exec",
        key,
        {
            "async": True,
            "command": (
                f"setsid sh -c 'sleep {token}' </dev/null >/dev/null 2>&1 &"
                " while [ ! -e /workspace/go ]; do sleep 0.05; done"
            ),
        },
    )
    assert accepted.status_code in (200, 202), accepted.text
    command_id = accepted.json()["command_id"]
    wait_until(lambda: host_processes_with(f"sleep {token}"), timeout=30, what="the survivor")

    snap = post(f"{platform.api_url}/v1/sandboxes/{sid}/snapshots", key)  # its tar ends while the command runs
    assert snap.status_code == 201, snap.text
    go = httpx.put(f"{platform.api_url}/v1/sandboxes/{sid}/files/go", headers=auth(key), content=b"")
    assert go.status_code == 200, go.text

    def finished() -> bool:
        return any(
            e["type"] == "exec.finished" and e["payload"]["command_id"] == command_id
            for e in events(platform, key, sid)
        )

    wait_until(finished, timeout=30, what="the command's end")
    detached = [e["payload"] for e in events(platform, key, sid) if e["type"] == "exec.detached"]
    stop(platform, key, sid)
    assert any(f"sleep {token}" in " ".join(d["argv"]) for d in detached), f"never recorded: {detached}"


def test_commands_run_under_the_same_seccomp_filter_on_every_provider(platform: Platform) -> None:
    """The profile promises seccomp everywhere (docker's default profile); a bwrap sandbox's
    commands ran with no filter at all (Seccomp: 0): keyctl, bpf, perf_event_open and the rest of
    the kernel surface docker refuses were reachable."""
    key = platform.tenant_key()
    sid = create(platform.api_url, key)["id"]
    status = run(platform, key, sid, "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")["stdout"]
    upload(platform, key, sid, "denied.py", SCRIPTS / "denied_syscalls.py")
    calls = run(platform, key, sid, ["python3", "denied.py"])["stdout"]
    stop(platform, key, sid)
    fields = dict(line.split(":\t") for line in status.splitlines())
    assert fields == {"Seccomp": "2", "NoNewPrivs": "1"}, f"{platform.provider}: {status}"
    reached = [line for line in calls.splitlines() if line.split()[1] != "EPERM"]
    assert calls and not reached, f"{platform.provider}: reachable: {reached}"


LISTENERS = "awk 'NR > 1 && $4 == \"0A\"' /proc/net/tcp | wc -l"  # listening TCP sockets of the sandbox


def test_a_refused_exec_leaves_no_forwarder_listening(platform: Platform) -> None:
    """An exec the supervisor refused after opening its egress forwarder (argv[0] with '=') left
    that forwarder listening for the sandbox's life: a listener and a thread of the supervisor per
    refused exec, and a port whose connections the proxy attributes to a command that never ran."""
    key = platform.tenant_key()
    sid = create(platform.api_url, key, egress_allow=["GET allowed.example"])["id"]
    before = run(platform, key, sid, LISTENERS)["stdout"]  # 3128 and the probe's own forwarder
    for _ in range(3):
        r = post(f"{platform.api_url}/v1/sandboxes/{sid}/exec", key, {"command": ["A=B", "x"]})
        assert r.status_code == 422 or r.json()["exit_code"] is None, r.text
    after = run(platform, key, sid, LISTENERS)["stdout"]
    stop(platform, key, sid)
    assert after == before, f"listening sockets {before.strip()} -> {after.strip()}"


def test_no_host_path_is_visible_in_any_command_line(platform: Platform) -> None:
    """bwrap's own process is the sandbox's pid 1, and its command line (world-readable in the
    sandbox's /proc) named the control directory, the rootfs overlay and the supervisor directory
    on the host: the very paths mountinfo was cleaned of."""
    key = platform.tenant_key()
    sid = create(platform.api_url, key)["id"]
    provider = platform.processor.provider
    shown = run(platform, key, sid, "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done")["stdout"]
    stop(platform, key, sid)
    host_paths = [str(p) for p in (platform.settings.state_dir, provider.runtime, provider.control_root)]
    assert "supervisor.py" in shown, shown
    leaked = [line for line in shown.splitlines() if any(p in line for p in host_paths)]
    assert not leaked, f"host paths visible inside: {leaked}"


def test_a_sparse_snapshot_is_refused_before_it_is_unpacked(api_url, sandbox_processor, tenant) -> None:
    """A sparse file costs a tmpfs nothing, but the snapshot's tar stores its whole apparent size:
    300 MiB of zeros are a 300 KiB archive. Its restore unpacked every byte twice: on the host
    (the check, in the processor: 2 GiB took 2m50s of its CPU, under the GIL, for each restore and
    each fork) and in the new sandbox. An archive that cannot fit the new workspace is refused
    from its headers, before any data is decompressed or any byte reaches the sandbox."""
    _, key = tenant
    source = create(api_url, key, profile={"workspace_mb": 16})["id"]
    made = post(f"{api_url}/v1/sandboxes/{source}/exec", key, {"command": "truncate -s 300M /workspace/sparse"})
    assert made.json()["exit_code"] == 0, made.text
    snapshot = post(f"{api_url}/v1/sandboxes/{source}/snapshots", key)
    post(f"{api_url}/v1/sandboxes/{source}/stop", key)
    assert snapshot.status_code == 201 and snapshot.json()["size"] < 1024 * 1024, snapshot.text

    restored = create(api_url, key, restore_snapshot=snapshot.json()["id"], profile={"workspace_mb": 64})
    post(f"{api_url}/v1/sandboxes/{restored['id']}/stop", key)
    assert restored["state"] == "failed", restored
    assert "more than the workspace's" in restored["reason"], restored["reason"]


def test_a_command_that_takes_the_supervisor_down_is_recorded_without_host_details(platform: Platform) -> None:
    """A sandbox that dies under a running command (the host's OOM killer, an engine restart; here
    the host stops it): that command was recorded with neither an exit code nor an error, and every
    later exec's error named the control directory's host path."""
    key = platform.tenant_key()
    sid = create(platform.api_url, key, profile={"memory_mb": 64})["id"]
    url = f"{platform.api_url}/v1/sandboxes/{sid}/exec"
    answers: dict[str, dict] = {}
    running = threading.Thread(target=lambda: answers.update(fill=post(url, key, {"command": "sleep 30"}).json()))
    running.start()
    wait_until(lambda: "exec.started" in [e["type"] for e in events(platform, key, sid)], timeout=30, what="start")
    platform.processor.provider.stop(sid)  # not through the platform: the sandbox just dies
    running.join(timeout=60)
    after = post(url, key, {"command": "echo alive"}).json()
    stop(platform, key, sid)
    provider = platform.processor.provider
    for result in (answers["fill"], after):
        assert result["exit_code"] is not None or result["error"], f"nothing says what happened: {result}"
        leaked = [str(p) for p in (platform.settings.state_dir, provider.runtime) if str(p) in (result["error"] or "")]
        assert not leaked, f"host path in a tenant's record: {result['error']}"


def test_the_sandbox_does_not_learn_the_hosts_name_or_its_container_id(platform: Platform) -> None:
    """bwrap's new UTS namespace starts as a copy of the host's, so the host's name showed inside;
    docker names a container's host after its engine id. Both are the host's details."""
    key = platform.tenant_key()
    sid = create(platform.api_url, key)["id"]
    shown = run(platform, key, sid, "uname -n; echo ${HOSTNAME:-unset}")["stdout"].split()
    stop(platform, key, sid)
    assert shown[0] == "sandbox" and shown[1] in ("sandbox", "unset"), shown


def test_a_survivor_cannot_use_its_ended_commands_forwarder(platform: Platform) -> None:
    """A command's forwarder stopped listening when the command ended, but connections opened
    through it stayed up: a process the command left behind went on sending requests recorded as
    that command's, after it ended (the proxy's docstring says such a process is unattributed)."""
    key = platform.tenant_key()
    sid = create(platform.api_url, key, egress_allow=["GET allowed.example"])["id"]
    upload(platform, key, sid, "late.py", SCRIPTS / "late_egress.py")
    ended = run(
        platform,
        key,
        sid,
        "setsid python3 late.py </dev/null >/dev/null 2>&1 & while [ ! -e connected ]; do sleep 0.02; done",
    )
    assert ended["exit_code"] == 0, ended
    go = httpx.put(f"{platform.api_url}/v1/sandboxes/{sid}/files/go", headers=auth(key), content=b"")
    assert go.status_code == 200, go.text

    def outcome() -> str:
        r = httpx.get(f"{platform.api_url}/v1/sandboxes/{sid}/files/late.out", headers=auth(key))
        return r.text if r.status_code == 200 else ""

    wait_until(outcome, timeout=30, what="the late request's outcome")
    if outcome() != "closed":
        wait_until(lambda: [e for e in events(platform, key, sid) if e["type"] == "egress.denied"], timeout=20)
    late = [e["payload"] for e in events(platform, key, sid) if e["type"] == "egress.denied"]
    stop(platform, key, sid)
    assert not [d for d in late if d["command_id"] == ended["command_id"]], f"after it ended: {late}"


def test_what_a_sandbox_keeps_in_its_tmpfs_is_bounded_and_counted(platform: Platform) -> None:
    """A tmpfs is memory. Under docker its pages are charged to the sandbox: with the limit at
    memory_mb alone, filling /workspace made the OOM killer take the supervisor (the sandbox died,
    still shown ready). Now the sandbox may hold memory_mb plus its tmpfs caps (docker's limit is the
    sum), what it holds stops at the workspace cap on both providers, and the tenant's memory quota
    counts the sum (the default quota of 32 GiB admits 16 default sandboxes, not 64)."""
    key = platform.tenant_key()
    profile = {"memory_mb": 64, "workspace_mb": 256, "tmp_mb": 16, "home_mb": 16}
    sid = create(platform.api_url, key, profile=profile)["id"]
    url = f"{platform.api_url}/v1/sandboxes/{sid}/exec"
    post(url, key, {"command": "head -c 300M /dev/zero > /workspace/f"})
    held = post(url, key, {"command": "du -sm /workspace | cut -f1"}).json()
    assert held["exit_code"] == 0, f"the supervisor did not survive: {held}"
    assert int(held["stdout"]) <= 256, f"{held['stdout'].strip()} MiB held past the workspace cap of 256"
    # the quota counts 64 + 256 + 16 + 16 = 352 MiB for it: three more of those pass 1024
    tight = platform.settings.model_copy(update={"quota_memory_mb": 1024})
    with running_api(tight) as url_tight:
        answers = [post(f"{url_tight}/v1/sandboxes", key, {"profile": profile}).json() for _ in range(2)]
    stop(platform, key, sid)
    for answer in answers:
        if answer.get("id"):
            stop(platform, key, answer["id"])
    codes = [a.get("error", {}).get("code") for a in answers]
    assert codes == [None, "quota_exceeded"], answers
