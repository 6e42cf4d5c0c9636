"""The contract every sandbox provider meets. A provider's test module subclasses
``SandboxProviderContract`` and supplies only the ``provider`` fixture."""

import hashlib
import io
import os
import secrets
import socket
import subprocess
import time

import pytest

from astraforge.sandbox.client import SupervisorError, SupervisorImpostor
from astraforge.sandbox.profile import SecurityProfile
from astraforge.sandbox.providers.base import SandboxHandle, SandboxProvider, SandboxSpec


class SandboxProviderContract:
    @pytest.fixture
    def sandbox(self, provider: SandboxProvider):
        sandbox_id = f"contract-{secrets.token_hex(4)}"
        handle = provider.create(SandboxSpec(sandbox_id, profile=SecurityProfile(memory_mb=256)))
        yield handle
        provider.stop(sandbox_id)

    def test_create_is_idempotent_and_stop_removes_everything(self, provider: SandboxProvider) -> None:
        sandbox_id = f"contract-{secrets.token_hex(4)}"
        first = provider.create(SandboxSpec(sandbox_id))
        pid = first.client.ping()["pid"]
        again = provider.create(SandboxSpec(sandbox_id))  # a retried create after a crash
        assert again.client.ping()["pid"] == pid, "the same sandbox, not a second one"
        assert sandbox_id in provider.list_ids()
        provider.stop(sandbox_id)
        provider.stop(sandbox_id)  # idempotent
        assert sandbox_id not in provider.list_ids()
        assert provider.handle(sandbox_id) is None

    def test_a_host_process_holding_many_fds_still_creates_and_execs(self, provider: SandboxProvider) -> None:
        """The host runs the API, the projector and every processor in one process: past 1,024 open fds
        (FD_SETSIZE) a ``select()`` anywhere on the create or exec path fails every new sandbox."""
        held = []
        try:
            while not held or held[-1] < 1100:
                held.append(os.open(os.devnull, os.O_RDONLY))
            sandbox_id = f"contract-{secrets.token_hex(4)}"
            handle = provider.create(SandboxSpec(sandbox_id))
            try:
                assert handle.client.exec(shell="echo ok").exit_code == 0
            finally:
                provider.stop(sandbox_id)
        finally:
            for fd in held:
                os.close(fd)

    def test_exec_streams_output_exit_code_and_env(self, sandbox: SandboxHandle) -> None:
        seen = []
        result = sandbox.client.exec(
            shell="echo out; echo err >&2; echo $GREETING; exit 7",
            env={"GREETING": "hi"},
            on_output=lambda stream, data: seen.append((stream, data)),
        )
        assert result.exit_code == 7
        assert b"".join(d for s, d in seen if s == "stdout") == b"out\nhi\n"
        assert b"".join(d for s, d in seen if s == "stderr") == b"err\n"

    def test_python_writes_no_bytecode(self, sandbox: SandboxHandle) -> None:
        """A module edited and re-imported within the same second at the same size must not come back
        stale from a .pyc: sandboxes run Python without bytecode files."""
        out: list[bytes] = []
        result = sandbox.client.exec(
            shell="cd /tmp; echo 'X = 1' > m.py; python3 -c 'import m, sys; print(sys.dont_write_bytecode)' && ls -a",
            on_output=lambda stream, data: out.append(data),
        )
        assert result.exit_code == 0
        assert b"".join(out).startswith(b"True\n") and b"__pycache__" not in b"".join(out)

    def test_the_supervisor_loads_from_the_bytecode_the_host_compiled(self, sandbox: SandboxHandle) -> None:
        """Compiling the supervisor at every start cost ~30 ms of CPU per create; it loads from the
        checked-hash .pyc the host wrote beside it (``sandbox/supervisor_start.py``). The same
        import, traced, says which it read (the sandbox's python and the host's are both 3.11 here)."""
        code = "import sys; sys.path.insert(0, '/opt/astraforge'); import astraforge_supervisor"
        result = sandbox.client.exec(argv=["python3", "-v", "-c", code])
        assert result.exit_code == 0, result.stderr[-2000:]
        assert b"code object from '/opt/astraforge/__pycache__/astraforge_supervisor." in result.stderr

    def test_a_confined_step_writes_only_beneath_its_writable_directories(self, sandbox: SandboxHandle) -> None:
        """Runs' writable paths (``processors/runs/executors/confine.py``) hold in every provider."""
        from astraforge.processors.runs.executors.script import step_call

        step = {"kind": "shell", "command": "echo a > src/ok && echo b > /tmp/ok && echo c > top || echo denied"}
        call = step_call(step, "confined", (), ["src/"])
        result = sandbox.client.exec(argv=call.payload["argv"], cwd="/workspace")
        assert (result.exit_code, result.stdout.splitlines()[-1:]) == (0, [b"denied"]), result.stderr
        assert b"Permission denied" in result.stderr
        listing = sandbox.client.exec(shell="ls /workspace /workspace/src /tmp/ok")
        assert listing.stdout.split() == [b"/tmp/ok", b"/workspace:", b"src", b"/workspace/src:", b"ok"]

    def test_runs_as_non_root_in_workspace_with_python(self, sandbox: SandboxHandle) -> None:
        result = sandbox.client.exec(shell="id -u; pwd; python -c 'print(6*7)'")
        assert result.stdout.decode().split() == ["1000", "/workspace", "42"]

    def test_timeout_kills_the_whole_process_tree(self, sandbox: SandboxHandle) -> None:
        started = time.monotonic()
        result = sandbox.client.exec(shell="sleep 60 & sleep 60; echo never", timeout_s=0.5)
        assert result.timed_out and time.monotonic() - started < 5
        assert b"never" not in result.stdout
        left = sandbox.client.exec(shell="ps -eo comm= 2>/dev/null | grep -c sleep || ls /proc | grep -c '^[0-9]'")
        assert b"sleep" not in left.stdout

    def test_concurrent_execs_and_cancel(self, sandbox: SandboxHandle) -> None:
        import threading

        results = {}

        def run(name: str, shell: str) -> None:
            results[name] = sandbox.client.exec(shell=shell, request_id=name)

        slow_id = f"slow-{secrets.token_hex(3)}"
        slow = threading.Thread(target=run, args=(slow_id, "sleep 30"))
        slow.start()
        quick = sandbox.client.exec(shell="echo quick")
        assert quick.stdout == b"quick\n"  # not blocked by the running command
        time.sleep(0.2)
        sandbox.client.cancel(slow_id)
        slow.join(timeout=10)
        assert results[slow_id].cancelled and results[slow_id].exit_code == -9

    def test_a_request_id_never_runs_twice(self, sandbox: SandboxHandle) -> None:
        sandbox.client.exec(shell="echo once >> counter", request_id="dedupe-1")
        with pytest.raises(SupervisorError, match="duplicate"):
            sandbox.client.exec(shell="echo once >> counter", request_id="dedupe-1")
        assert sandbox.client.read("counter") == b"once\n"

    def test_files_round_trip_and_stay_inside_the_writable_roots(self, sandbox: SandboxHandle) -> None:
        data = bytes(range(256)) * 1000
        written = sandbox.client.write("dir/blob.bin", data)
        assert written["path"] == "/workspace/dir/blob.bin" and written["size"] == len(data)
        assert sandbox.client.read("/workspace/dir/blob.bin") == data
        for bad in ["../etc/x", "/etc/passwd", "/usr/bin/evil", "/proc/self/mem"]:
            with pytest.raises(SupervisorError, match="forbidden_path"):
                sandbox.client.write(bad, b"x")
        sandbox.client.exec(shell="ln -s /etc /workspace/link")
        with pytest.raises(SupervisorError, match="forbidden_path"):
            sandbox.client.write("link/passwd", b"x")
        with pytest.raises(SupervisorError, match="not_found"):
            sandbox.client.read("missing.txt")

    def test_stdin_streams_past_the_sandboxs_tmp_and_an_unread_stdin_never_hangs(self, provider) -> None:
        """A restore pipes a snapshot into tar: the body is streamed (more than the sandbox's /tmp,
        never staged); a command that exits without reading its stdin ends the request, not the host."""
        sandbox_id = f"contract-{secrets.token_hex(4)}"
        handle = provider.create(SandboxSpec(sandbox_id, profile=SecurityProfile(memory_mb=256, tmp_mb=16)))
        try:
            body = os.urandom(24 * 1024 * 1024)
            result = handle.client.exec(argv=["sha256sum"], stdin=io.BytesIO(body), stdin_size=len(body))
            assert result.exit_code == 0 and result.stdout.split()[0].decode() == hashlib.sha256(body).hexdigest()
            started = time.monotonic()
            ignored = handle.client.exec(shell="exit 3", stdin=io.BytesIO(body), stdin_size=len(body), timeout_s=30)
            assert ignored.exit_code == 3 and time.monotonic() - started < 20
            assert handle.client.exec(shell="cat").stdout == b"", "without a body stdin is /dev/null"
        finally:
            provider.stop(sandbox_id)

    def test_the_host_talks_only_to_this_sandboxs_supervisor(self, provider: SandboxProvider, sandbox) -> None:
        """Behind the control directory's permissions (the agent cannot write there; see
        tests/security/test_control_channel.py), the host itself follows no path the sandbox could
        change and checks who listens: here whatever could write there swaps the socket."""
        other_id = f"contract-{secrets.token_hex(4)}"
        other = provider.create(SandboxSpec(other_id))
        path = sandbox.control_dir / "supervisor.sock"
        real = path.with_name("real.sock")
        os.rename(path, real)
        try:
            os.symlink(other.control_dir / "supervisor.sock", path)  # another sandbox's socket
            with pytest.raises(SupervisorImpostor, match="not a socket"):
                sandbox.client.ping()
            os.unlink(path)
            path.touch()
            subprocess.run(["mount", "--bind", other.control_dir / "supervisor.sock", path], check=True)
            try:  # the other sandbox's very socket: its supervisor runs as the same uid, in another pid namespace
                with pytest.raises(SupervisorImpostor, match="not by the sandbox's supervisor"):
                    sandbox.client.ping()
            finally:
                subprocess.run(["umount", path], check=True)
            os.unlink(path)
            with socket.socket(socket.AF_UNIX) as impostor:  # a listener of the host's
                impostor.bind(str(path))
                impostor.listen()
                with pytest.raises(SupervisorImpostor, match="not by the sandbox's supervisor"):
                    sandbox.client.ping()
            os.unlink(path)
        finally:
            os.rename(real, path)
            provider.stop(other_id)
        assert sandbox.client.ping()["pong"]


class Detach(Exception):
    """Raised from a host's output callback: the host goes away mid-command (its connection closes)."""


def numbered(gates: int) -> str:
    """A command printing ``1``.. in groups of three, waiting for the file ``gate<k>`` after group k."""
    lines, n = [], 0
    for k in range(1, gates + 1):
        lines.append(" ".join(f"echo {n + i};" for i in (1, 2, 3)))
        lines.append(f"while [ ! -e gate{k} ]; do sleep 0.02; done;")
        n += 3
    return " ".join([*lines, f"echo {n + 1}; exit 3"])


class CommandHandoffContract:
    """A command outlives its host's connection (supervisor protocol 2): another host re-attaches
    from the byte offset it has recorded and reads the rest, and the exit, exactly once."""

    def test_a_detached_command_goes_on_and_a_new_host_reads_on_from_its_offset(self, sandbox) -> None:
        client = sandbox.client
        assert client.ping()["protocol"] == 2
        cid = f"handoff-{secrets.token_hex(3)}"
        client.exec(shell="rm -f gate1 gate2")
        seen = bytearray()

        def first_host(stream: str, data: bytes) -> None:
            seen.extend(data)
            if seen.count(b"\n") >= 3:
                raise Detach  # the first host goes away after reading 1..3

        with pytest.raises(Detach):
            client.exec(shell=numbered(2), request_id=cid, on_output=first_host)
        assert bytes(seen) == b"1\n2\n3\n"
        client.write("gate1", b"")  # 4..6 are produced with nobody attached
        later = bytearray()

        def second_host(stream: str, data: bytes) -> None:
            later.extend(data)
            if later.endswith(b"6\n"):
                client.write("gate2", b"")

        # it recorded only "1\n2\n" of what it read: the next host reads on from there
        result = client.attach(cid, offset=4, on_output=second_host)
        assert (bytes(later), result.exit_code, result.resumed_at, result.lost) == (b"3\n4\n5\n6\n7\n", 3, 4, 0)
        again = client.attach(cid, offset=0)  # ended, and still kept: the whole output and the exit
        assert (again.stdout, again.exit_code) == (b"1\n2\n3\n4\n5\n6\n7\n", 3)
        with pytest.raises(SupervisorError, match="duplicate"):
            client.exec(shell="echo again", request_id=cid)  # re-attaching never runs it again
        never = f"never-{secrets.token_hex(3)}"
        with pytest.raises(SupervisorError, match="not_found"):
            client.attach(never, offset=0)
        with pytest.raises(SupervisorError, match="duplicate"):  # closed as never run: a late start never runs it
            client.exec(shell="echo late", request_id=never)

    def test_a_second_host_takes_the_command_over_from_the_first(self, sandbox) -> None:
        import threading

        client = sandbox.client
        cid = f"takeover-{secrets.token_hex(3)}"
        client.exec(shell="rm -f gate1")
        outcome: dict = {}
        started = threading.Event()

        def first_host() -> None:
            try:
                outcome["first"] = client.exec(shell=numbered(1), request_id=cid, on_start=lambda _: started.set())
            except SupervisorError as e:
                outcome["first"] = e.code

        first = threading.Thread(target=first_host)
        first.start()
        assert started.wait(10)
        later = bytearray()

        def second_host(stream: str, data: bytes) -> None:
            later.extend(data)
            if later.endswith(b"3\n"):
                client.write("gate1", b"")

        result = client.attach(cid, offset=0, on_output=second_host)
        first.join(10)
        assert outcome["first"] == "taken_over", outcome
        assert (bytes(later), result.exit_code) == (b"1\n2\n3\n4\n", 3)

    def test_output_past_the_bound_while_detached_is_dropped_and_counted_never_blocking(self, sandbox) -> None:
        client = sandbox.client
        cid = f"bound-{secrets.token_hex(3)}"
        size = 3 * 1024 * 1024

        def go_away(pid: int) -> None:
            raise Detach

        with pytest.raises(Detach):
            client.exec(shell=f"head -c {size} /dev/zero; touch bound-done", request_id=cid, on_start=go_away)
        deadline = time.monotonic() + 30
        while True:  # with nobody attached the command never waits for a reader: it ends
            try:
                client.read("bound-done")
                break
            except SupervisorError:
                assert time.monotonic() < deadline, "a detached command blocked on its output"
                time.sleep(0.05)
        result = client.attach(cid, offset=0)
        assert result.exit_code == 0 and result.lost > 0 and result.resumed_at == result.lost
        assert result.lost + len(result.stdout) == size and len(result.stdout) >= 1024 * 1024
