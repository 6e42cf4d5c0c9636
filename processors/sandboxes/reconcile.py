"""Reconciling the provider's sandboxes with the state of the partitions this instance owns.

A sandbox the provider runs that no live state owns is an orphan (e.g. leaked by a crash between
create and ``sandbox.ready``). An instance decides only about sandboxes it is responsible for: those
whose stream hashes to a partition it owns (a claimed warm sandbox counts as its claimer's), and its
own unclaimed warm-pool sandboxes. Another instance's sandboxes, and warm sandboxes claimed by a
stream in another instance's partition, are left alone.

Not handled: a sandbox of a run-owned stream (stream id != sandbox id) would need its stream in a
provider label to be attributed; today every sandbox is its own stream.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from astraforge.processors.sandboxes.state import ENDED, SandboxState


@dataclass(frozen=True)
class Orphans:
    reap: list[str] = field(default_factory=list)  # runtime ids to stop
    adopt: list[tuple[int, str]] = field(default_factory=list)  # this instance's unclaimed warm sandboxes


@dataclass(frozen=True)
class WarmView:
    """What reconciling needs to know of the warm pools (``WarmPools.view``)."""

    claims: Mapping[str, str]  # warm runtime id -> the sandbox that claimed it
    mine: Callable[[str], int | None]  # the pool index of one of this instance's warm sandboxes, else None
    pooled: frozenset[str]  # waiting in this instance's pools now
    is_warm: Callable[[str], bool]


def orphans(
    present: Iterable[str],
    states: Iterable[SandboxState],
    owned: Iterable[int],
    partition_of: Callable[[str], int],
    warm: WarmView,
) -> Orphans:
    """What to do with the provider's sandboxes that no live state owned by this instance claims."""
    owned = set(owned)
    live = {st.runtime_id for st in states if st.state not in ENDED} | {
        st.sandbox_id for st in states if st.state not in ENDED
    }
    result = Orphans()
    for runtime_id in sorted(set(present) - live):
        sandbox_id = warm.claims.get(runtime_id) if warm.is_warm(runtime_id) else runtime_id
        if sandbox_id is None:  # an unclaimed warm sandbox: its instance's pool
            index = warm.mine(runtime_id)
            if index is not None and runtime_id not in warm.pooled:
                result.adopt.append((index, runtime_id))
        elif sandbox_id in live:
            continue  # claimed by a live sandbox (e.g. still provisioning)
        elif partition_of(sandbox_id) in owned:
            result.reap.append(runtime_id)
    return result
