import json
import secrets
import subprocess

import pytest

from astraforge.sandbox.processes import ProcessRef
from tests.contracts.sandbox_provider import CommandHandoffContract, SandboxProviderContract


class TestBwrapProvider(SandboxProviderContract, CommandHandoffContract):
    @pytest.fixture
    def provider(self, bwrap_provider):
        return bwrap_provider


def test_a_reused_pid_is_never_signalled(bwrap_provider) -> None:
    """Pids come back (pid_max is 32768 here; a test run starts more processes than that): a sandbox
    whose init died and whose pid now names an unrelated process must neither be listed nor stopped
    by signalling that pid, whether its record keeps a start time or (an old record) only the pid."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        own = ProcessRef.of(bystander.pid)
        stale = ProcessRef(own.pid, own.started - 1, own.boot)  # the process that had this pid before
        records = {
            f"gone-{secrets.token_hex(4)}": {"init": stale.to_json(), "launcher": stale.to_json()},
            f"old-{secrets.token_hex(4)}": {"pid": bystander.pid, "child_pid": bystander.pid},
        }
        for sandbox_id, record in records.items():
            bwrap_provider._pidfile(sandbox_id).write_text(json.dumps(record))
        assert not set(records) & bwrap_provider.list_ids()
        for sandbox_id in records:
            bwrap_provider.stop(sandbox_id)
            assert not bwrap_provider._pidfile(sandbox_id).exists()
        assert bystander.poll() is None, "an unrelated process that reused a sandbox's pid was killed"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_process_ref_signals_only_its_own_process() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    ref = ProcessRef.of(proc.pid)
    assert ref.alive() and not ProcessRef(ref.pid, ref.started + 1, ref.boot).kill()
    assert proc.poll() is None
    assert ref.kill() and proc.wait(5) == -9
    assert not ref.alive() and not ref.kill()
