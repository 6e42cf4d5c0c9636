"""The lease guard driven directly over a real bwrap sandbox and PostgreSQL's lease table, for what the
public API cannot reach in a test's time or order: the bound on the copies it keeps, leases past one
supervisor request, a swap between its fingerprint and its read, a leased file with a long name.
"""

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from astraforge import leases
from astraforge.config import Settings
from astraforge.db import connect
from astraforge.processors.sandboxes.lease_guard import LeaseGuard
from astraforge.sandbox.client import SupervisorClient
from astraforge.sandbox.providers.base import SandboxSpec
from tests.conftest import make_settings

FILE = 4096
FILES = [f"/workspace/f{i}.txt" for i in range(4)]
SWAPS = {"symlink": "ln -s /tmp/evil new", "rename": "cp /tmp/evil new"}


@dataclass
class Room:
    """A bwrap sandbox, its supervisor client, and a lease guard over ``settings``."""

    sid: str
    client: SupervisorClient
    guard: LeaseGuard
    settings: Settings

    def lease(self, *paths: str) -> None:
        """``paths`` leased by ``a``."""
        with connect(self.settings, autocommit=True) as conn:
            for path in paths:
                assert leases.acquire(conn, "t-room", self.sid, path, "a", 600).granted

    def run(self, shell: str) -> None:
        """A command of the sandbox (as ``b`` would run it; the guard is called around it by the test)."""
        assert self.client.exec(shell=shell, cwd="/workspace").exit_code == 0


@contextlib.contextmanager
def room(bwrap_provider, **overrides) -> Iterator[Room]:
    settings = make_settings(**overrides)
    sid = f"sb-{secrets.token_hex(16)}"
    handle = bwrap_provider.create(SandboxSpec(sid))
    guard = LeaseGuard(settings)
    try:
        yield Room(sid, handle.client, guard, settings)
    finally:
        guard.close()
        bwrap_provider.stop(sid)
        with connect(settings, autocommit=True) as conn:
            conn.execute("DELETE FROM file_leases WHERE sandbox_id = %s", (sid,))


def test_the_copies_kept_at_once_are_bounded(bwrap_provider) -> None:
    """Every watched command kept its own copy of each leased file (64 MiB a file): one tenant's leases
    times its 32 concurrent commands filled the processor's disk. The copies kept at once are bounded
    per processor (``lease_guard_kept_bytes``); past it a change is reported, not put back."""
    with room(bwrap_provider, max_file_bytes=2 * FILE, lease_guard_kept_bytes=3 * FILE) as r:
        for path in FILES:
            r.client.write(path, b"a" * FILE)
        r.lease(*FILES)
        first, second = r.guard.before(r.client, r.sid, "b"), r.guard.before(r.client, r.sid, "c")
        change = " && ".join(f"echo pwned > {path}" for path in FILES)
        r.run(change)
        # the second command's watch found no room: every change reported, none put back
        assert sorted(v.restored for v in r.guard.after(r.client, second)) == [False] * 4
        assert sorted(v.restored for v in r.guard.after(r.client, first)) == [False, True, True, True]
        # both ended: their room is free again
        third = r.guard.before(r.client, r.sid, "b")
        r.run(change.replace("pwned", "again"))
        assert sorted(v.restored for v in r.guard.after(r.client, third)) == [False, True, True, True]
        assert r.guard._kept == 0


def test_leases_past_one_request_line_are_still_watched(bwrap_provider) -> None:
    """The supervisor reads a request line of at most 1 MiB: leased paths whose names add up past it
    (500 leases of 2,500-character paths) made the fingerprint request unreadable, and every command
    of every other actor in the sandbox ran unwatched. The paths are fingerprinted in batches."""
    long = "/workspace/" + "/".join(["d" * 250] * 10)
    paths = [f"{long}/{i}.txt" for i in range(500)] + ["/workspace/leased.py"]
    with room(bwrap_provider) as r:
        r.client.write("/workspace/leased.py", b"mine\n")
        r.lease(*paths)
        watch = r.guard.before(r.client, r.sid, "b")
        assert watch is not None and len(watch.files) == len(paths)
        r.run("echo pwned > leased.py")
        (violation,) = r.guard.after(r.client, watch)
        assert (violation.path, violation.restored) == ("/workspace/leased.py", True)
        assert r.client.read("/workspace/leased.py") == b"mine\n"


@pytest.mark.parametrize("swap", SWAPS)
def test_a_file_swapped_in_after_the_fingerprint_is_not_kept_as_the_holders(bwrap_provider, swap) -> None:
    """The guard fingerprints a leased file, then reads its bytes to keep, and took the read's hash as
    the holder's: a command that swaps in its own file (or a symlink to it) between the two had its
    bytes kept as the holder's, then left a plain copy of them at the path, and the check saw no
    change. The read is of the path itself (no symlink followed) and must match the fingerprint: the
    change is reported. The interleaving is made deterministic: the swap runs as the fingerprint returns."""
    with room(bwrap_provider) as r:
        r.client.write("/workspace/leased.py", b"mine\n")
        r.client.write("/tmp/evil", b"evil\n")
        r.lease("/workspace/leased.py")
        fingerprint = r.client.fingerprint

        def fingerprint_then_swap(paths: list[str], max_bytes: int | None = None) -> dict:
            prints = fingerprint(paths, max_bytes)
            r.run(f"{SWAPS[swap]} && mv -T new leased.py")
            return prints

        r.client.fingerprint = fingerprint_then_swap
        watch = r.guard.before(r.client, r.sid, "b")
        r.client.fingerprint = fingerprint
        r.run("rm leased.py && cp /tmp/evil leased.py")
        (violation,) = r.guard.after(r.client, watch)
        assert violation.path == "/workspace/leased.py"


def test_a_leased_file_with_a_long_name_is_put_back(bwrap_provider) -> None:
    """A name of 250 characters is a valid file name, but the write's temporary file beside it was
    named after it (``<name>.af-<id>.tmp``, past NAME_MAX): such a leased file was never put back
    (nor could the file API write it)."""
    path = "/workspace/" + "n" * 250
    with room(bwrap_provider) as r:
        r.client.write(path, b"mine\n")
        r.lease(path)
        watch = r.guard.before(r.client, r.sid, "b")
        r.run(f"echo pwned > {path}")
        (violation,) = r.guard.after(r.client, watch)
        assert violation.restored and r.client.read(path) == b"mine\n"
