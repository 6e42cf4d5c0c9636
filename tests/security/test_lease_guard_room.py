"""The lease guard keeps a copy of every leased file for every watched command, to put it back: one
tenant's leases on many large files, times its concurrent commands (32), filled the processor's disk
(64 MiB a file, none of it shared). The copies kept at once are bounded per processor
(``lease_guard_kept_bytes``); a file past the bound is still checked and its change reported, not put back.

Real parts: a bwrap sandbox's supervisor and PostgreSQL's lease table (the guard is driven directly:
the bound is the processor's, smaller here than a test could fill through the API).
"""

import secrets

import pytest

from astraforge import leases
from astraforge.db import connect
from astraforge.processors.sandboxes.lease_guard import LeaseGuard
from astraforge.sandbox.providers.base import SandboxSpec
from tests.conftest import make_settings

FILE = 4096
FILES = [f"/workspace/f{i}.txt" for i in range(4)]


def test_the_copies_kept_at_once_are_bounded(bwrap_provider) -> None:
    settings = make_settings(max_file_bytes=2 * FILE, lease_guard_kept_bytes=3 * FILE)
    sid = f"sb-{secrets.token_hex(16)}"
    handle = bwrap_provider.create(SandboxSpec(sid))
    guard = LeaseGuard(settings)
    try:
        client = handle.client
        with connect(settings, autocommit=True) as conn:
            for path in FILES:
                client.write(path, b"a" * FILE)
                assert leases.acquire(conn, "t-room", sid, path, "a", 600).granted
        first, second = guard.before(client, sid, "b"), guard.before(client, sid, "c")
        change = " && ".join(f"echo pwned > {path}" for path in FILES)
        assert client.exec(shell=change, cwd="/workspace").exit_code == 0

        # the second command's watch found no room: every change reported, none put back
        assert sorted(v.restored for v in guard.after(client, second)) == [False] * 4
        assert sorted(v.restored for v in guard.after(client, first)) == [False, True, True, True]
        # both ended: their room is free again
        third = guard.before(client, sid, "b")
        assert client.exec(shell=change.replace("pwned", "again"), cwd="/workspace").exit_code == 0
        assert sorted(v.restored for v in guard.after(client, third)) == [False, True, True, True]
        assert guard._kept == 0
    finally:
        guard.close()
        bwrap_provider.stop(sid)
        with connect(settings, autocommit=True) as conn:
            conn.execute("DELETE FROM file_leases WHERE sandbox_id = %s", (sid,))


def test_leases_past_one_request_line_are_still_watched(bwrap_provider) -> None:
    """The supervisor reads a request line of at most 1 MiB: leased paths whose names add up past it
    (500 leases of 2,500-character paths) made the fingerprint request unreadable, and every command
    of every other actor in the sandbox ran unwatched. The paths are fingerprinted in batches."""
    settings = make_settings()
    sid = f"sb-{secrets.token_hex(16)}"
    handle = bwrap_provider.create(SandboxSpec(sid))
    guard = LeaseGuard(settings)
    long = "/workspace/" + "/".join(["d" * 250] * 10)
    paths = [f"{long}/{i}.txt" for i in range(500)] + ["/workspace/leased.py"]
    try:
        client = handle.client
        client.write("/workspace/leased.py", b"mine\n")
        with connect(settings, autocommit=True) as conn:
            for path in paths:
                assert leases.acquire(conn, "t-room", sid, path, "a", 600).granted
        watch = guard.before(client, sid, "b")
        assert watch is not None and len(watch.files) == len(paths)
        assert client.exec(shell="echo pwned > leased.py", cwd="/workspace").exit_code == 0
        (violation,) = guard.after(client, watch)
        assert (violation.path, violation.restored) == ("/workspace/leased.py", True)
        assert client.read("/workspace/leased.py") == b"mine\n"
    finally:
        guard.close()
        bwrap_provider.stop(sid)
        with connect(settings, autocommit=True) as conn:
            conn.execute("DELETE FROM file_leases WHERE sandbox_id = %s", (sid,))


SWAPS = {"symlink": "ln -s /tmp/evil new", "rename": "cp /tmp/evil new"}


@pytest.mark.parametrize("swap", SWAPS)
def test_a_file_swapped_in_after_the_fingerprint_is_not_kept_as_the_holders(bwrap_provider, swap) -> None:
    """The guard fingerprints a leased file, then reads its bytes to keep, and took the read's hash as
    the holder's: a command that swaps in its own file (or a symlink to it) between the two had its
    bytes kept as the holder's, then left a plain copy of them at the path, and the check saw no
    change. The read is of the path itself (no symlink followed) and must match the fingerprint: the
    change is reported. The interleaving is made deterministic: the swap runs as the fingerprint returns."""
    settings = make_settings()
    sid = f"sb-{secrets.token_hex(16)}"
    handle = bwrap_provider.create(SandboxSpec(sid))
    guard = LeaseGuard(settings)
    try:
        client = handle.client
        client.write("/workspace/leased.py", b"mine\n")
        client.write("/tmp/evil", b"evil\n")
        with connect(settings, autocommit=True) as conn:
            assert leases.acquire(conn, "t-room", sid, "/workspace/leased.py", "a", 600).granted
        fingerprint = client.fingerprint

        def fingerprint_then_swap(paths: list[str], max_bytes: int | None = None) -> dict:
            prints = fingerprint(paths, max_bytes)
            assert client.exec(shell=f"{SWAPS[swap]} && mv -T new leased.py", cwd="/workspace").exit_code == 0
            return prints

        client.fingerprint = fingerprint_then_swap
        watch = guard.before(client, sid, "b")
        client.fingerprint = fingerprint
        assert client.exec(shell="rm leased.py && cp /tmp/evil leased.py", cwd="/workspace").exit_code == 0
        (violation,) = guard.after(client, watch)
        assert violation.path == "/workspace/leased.py"
    finally:
        guard.close()
        bwrap_provider.stop(sid)
        with connect(settings, autocommit=True) as conn:
            conn.execute("DELETE FROM file_leases WHERE sandbox_id = %s", (sid,))


def test_a_leased_file_with_a_long_name_is_put_back(bwrap_provider) -> None:
    """A name of 250 characters is a valid file name, but the write's temporary file beside it was
    named after it (``<name>.af-<id>.tmp``, past NAME_MAX): such a leased file was never put back
    (nor could the file API write it)."""
    settings = make_settings()
    sid = f"sb-{secrets.token_hex(16)}"
    handle = bwrap_provider.create(SandboxSpec(sid))
    guard = LeaseGuard(settings)
    path = "/workspace/" + "n" * 250
    try:
        client = handle.client
        client.write(path, b"mine\n")
        with connect(settings, autocommit=True) as conn:
            assert leases.acquire(conn, "t-room", sid, path, "a", 600).granted
        watch = guard.before(client, sid, "b")
        assert client.exec(shell=f"echo pwned > {path}").exit_code == 0
        (violation,) = guard.after(client, watch)
        assert violation.restored and client.read(path) == b"mine\n"
    finally:
        guard.close()
        bwrap_provider.stop(sid)
        with connect(settings, autocommit=True) as conn:
            conn.execute("DELETE FROM file_leases WHERE sandbox_id = %s", (sid,))
