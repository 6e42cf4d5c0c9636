"""Warm pools: ready sandboxes of a given image and profile, waiting to be claimed by a create.

Each processor instance keeps its own pools; their sandboxes are named ``warm<pool>-<instance>-<hex>``
so that an instance adopts (after a restart) only its own unclaimed ones and never another
instance's. A claimed warm sandbox belongs to the sandbox that claimed it (its ``provider_id``); the
claim is also written to a host-only file (``<provider runtime>/claims/<warm id>``, outside every
sandbox) so that an instance restarted after its partitions moved never takes it back into its pool.
A claim pops the id and writes that file under the pools' lock, and ``adopt`` checks the file under
the same lock: whatever order a create and a reconcile's adopt run in, a claimed sandbox never goes
back into a pool, so no two creates get one container.
Not handled: the unclaimed warm sandboxes of an instance that never comes back stay until an
operator removes them (or an instance with the same ``instance_id`` starts).
"""

import hashlib
import logging
import re
import threading
from collections.abc import Callable

from astraforge.config import Settings
from astraforge.ids import new_id
from astraforge.processors.sandboxes.reconcile import WarmView
from astraforge.processors.sandboxes.state import SandboxState
from astraforge.sandbox.profile import SecurityProfile
from astraforge.sandbox.providers.base import SandboxProvider, SandboxSpec

LOG = logging.getLogger(__name__)
WARM_ID = re.compile(r"^warm(\d+)-([0-9a-f]{8})-")  # warm<pool index>-<instance tag>-<hex>


def instance_tag(instance_id: str) -> str:
    return hashlib.sha256(instance_id.encode()).hexdigest()[:8]


class WarmPools:
    def __init__(self, settings: Settings, provider: SandboxProvider, stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.provider = provider
        self.pools = settings.warm_pools
        self.tag = instance_tag(settings.instance_id)
        self.warm: dict[int, list[str]] = {i: [] for i in range(len(self.pools))}  # ready, unclaimed
        self._creating: set[str] = set()  # being created by a refill: not an orphan, not to adopt
        self._lock = threading.Lock()
        self._refilling = threading.Lock()
        self._stopping = stopping

    @staticmethod
    def is_warm(runtime_id: str) -> bool:
        return WARM_ID.match(runtime_id) is not None

    def view(self, present: set[str]) -> WarmView:
        """The warm pools as reconciling sees them, for the provider's ``present`` sandboxes."""
        with self._lock:  # claims and pool read together: a claim lands wholly before or after
            claims = {rid: sid for rid in present if self.is_warm(rid) and (sid := self.claimed_by(rid))}
            pooled = frozenset(rid for ids in self.warm.values() for rid in ids) | self._creating
        return WarmView(claims, self.mine, pooled, self.is_warm)

    def mine(self, runtime_id: str) -> int | None:
        """The pool index of one of this instance's warm sandboxes, else None."""
        match = WARM_ID.match(runtime_id)
        if match and match[2] == self.tag and int(match[1]) in self.warm:
            return int(match[1])
        return None

    def _claim_file(self, runtime_id: str):
        return self.provider.runtime / "claims" / runtime_id

    def _mark_claimed(self, runtime_id: str, sandbox_id: str) -> None:
        """Write the claim atomically (a crash leaves no empty file that would read as unclaimed)."""
        path = self._claim_file(runtime_id)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(f".{runtime_id}.tmp")
        tmp.write_text(sandbox_id)
        tmp.replace(path)

    def claimed_by(self, runtime_id: str) -> str | None:
        """The sandbox that claimed this warm sandbox, if any."""
        try:
            return self._claim_file(runtime_id).read_text() or None
        except FileNotFoundError:
            return None

    def claimed_for(self, sandbox_id: str) -> str | None:
        """The warm sandbox claimed for ``sandbox_id``, from the claim files: the claimer may have been
        another instance, or this one before a restart, that stopped before ``sandbox.ready`` said so."""
        try:
            claims = list((self.provider.runtime / "claims").iterdir())
        except FileNotFoundError:
            return None
        for path in claims:
            if path.name.startswith("."):  # a claim being written
                continue
            try:
                if path.read_text() == sandbox_id:
                    return path.name
            except FileNotFoundError:  # forgotten meanwhile
                continue
        return None

    def forget(self, runtime_id: str) -> None:
        self._claim_file(runtime_id).unlink(missing_ok=True)

    def adopt(self, index: int, runtime_id: str) -> bool:
        """Put one of this instance's warm sandboxes in its pool, unless it is there already or a
        create claimed it (e.g. after the reconcile that chose to adopt it looked). True if added."""
        with self._lock:
            if runtime_id in self.warm[index] or self.claimed_by(runtime_id) is not None:
                return False
            self.warm[index].append(runtime_id)
            return True

    def refill(self) -> None:
        """Top every pool up to its size (one refill at a time)."""
        if not self._refilling.acquire(blocking=False):
            return
        try:
            for index, pool in enumerate(self.pools):
                while len(self.warm[index]) < pool.size and not self._stopping():
                    runtime_id = f"warm{index}-{self.tag}-{new_id().replace('-', '')}"
                    spec = SandboxSpec(runtime_id, image=pool.image or self.settings.sandbox_image,
                                       profile=SecurityProfile(**pool.profile))  # fmt: skip
                    with self._lock:
                        self._creating.add(runtime_id)
                    try:
                        self.provider.create(spec)
                        self.adopt(index, runtime_id)
                    finally:
                        with self._lock:
                            self._creating.discard(runtime_id)
        except Exception:
            LOG.exception("warm pool refill failed")
        finally:
            self._refilling.release()

    def wait_refilled(self) -> None:
        """Wait for a refill under way (its one create finishes: nothing appears after this returns)."""
        with self._refilling:
            pass

    def claim(self, st: SandboxState) -> str | None:
        """A warm sandbox from the pool of exactly this image and profile, if there is one."""
        if st.restore_snapshot or st.has_egress:
            return None
        for index, pool in enumerate(self.pools):
            if (pool.image or self.settings.sandbox_image) == st.image and pool.profile == st.profile:
                with self._lock:  # popped and marked at once: ``adopt`` and ``view`` see both or neither
                    runtime_id = self.warm[index].pop(0) if self.warm[index] else None
                    if runtime_id:
                        try:
                            self._mark_claimed(runtime_id, st.sandbox_id)
                        except OSError:  # unmarked, it must not leave the pool: this create goes cold
                            LOG.exception("claim of warm sandbox %s not recorded", runtime_id)
                            self.warm[index].insert(0, runtime_id)
                            return None
                return runtime_id
        return None
