from dataclasses import replace

from astraforge.processors.sandboxes.reconcile import WarmView, orphans
from astraforge.processors.sandboxes.state import SandboxState
from astraforge.processors.sandboxes.warm_pool import WarmPools

MINE, OTHER = "0123abcd", "ffff0000"


def partition_of(stream_id: str) -> int:
    return int(stream_id.split("-")[1])  # "sb-<partition>-..." in these tests


def view(claims: dict[str, str] | None = None, pooled: frozenset[str] = frozenset()) -> WarmView:
    def mine(runtime_id: str) -> int | None:
        return 0 if runtime_id.startswith(f"warm0-{MINE}-") else None

    return WarmView(claims or {}, mine, pooled, WarmPools.is_warm)


def live(sandbox_id: str, **kw) -> SandboxState:
    return SandboxState(sandbox_id=sandbox_id, stream_id=sandbox_id, tenant_id="t", state="ready", **kw)


def test_only_orphans_of_owned_partitions_are_reaped() -> None:
    present = {"sb-0-live", "sb-0-leaked", "sb-1-theirs", "sb-0-ended"}
    states = [live("sb-0-live"), replace(live("sb-0-ended"), state="terminated")]
    found = orphans(present, states, {0}, partition_of, view())
    assert found.reap == ["sb-0-ended", "sb-0-leaked"]  # never sb-1-theirs: another instance's partition
    assert found.adopt == []


def test_warm_sandboxes_are_adopted_only_by_their_instance_and_only_unclaimed() -> None:
    mine, pooled, theirs = f"warm0-{MINE}-a", f"warm0-{MINE}-b", f"warm0-{OTHER}-c"
    claimed_here, claimed_there, claimed_live = f"warm0-{MINE}-d", f"warm0-{MINE}-e", f"warm0-{MINE}-f"
    present = {mine, pooled, theirs, claimed_here, claimed_there, claimed_live}
    claims = {claimed_here: "sb-0-gone", claimed_there: "sb-1-elsewhere", claimed_live: "sb-0-provisioning"}
    states = [replace(live("sb-0-provisioning"), state="provisioning")]  # runtime id not known yet
    found = orphans(present, states, {0}, partition_of, view(claims, frozenset({pooled})))
    assert found.adopt == [(0, mine)]  # not another instance's, not one already pooled, never a claimed one
    assert found.reap == [claimed_here]  # claimed by an ended sandbox of an owned partition
