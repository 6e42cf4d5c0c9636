"""Workspace snapshots: a gzip'd tar of /workspace made inside the sandbox, stored as an artifact,
and checked on the host before it is restored into a new sandbox.

A snapshot is data a sandbox produced, so it is untrusted: restore refuses absolute paths, ``..``
components, links that point outside the workspace, and device or fifo entries, before any byte
reaches the new sandbox (where it is unpacked by the sandbox user, inside its own tmpfs).
"""

import io
import posixpath
import tarfile

from astraforge.errors import ValidationError

SNAPSHOT_COMMAND = ["tar", "-C", "/workspace", "-czf", "-", "."]
RESTORE_PATH = "/tmp/.astraforge-restore.tgz"
RESTORE_COMMAND = ["sh", "-c", f"tar -xzf {RESTORE_PATH} -C /workspace && rm -f {RESTORE_PATH}"]


class UnsafeSnapshot(ValidationError):
    """The snapshot tar would write outside /workspace (or holds devices)."""


def _inside(path: str) -> bool:
    norm = posixpath.normpath(path)
    return not (path.startswith("/") or norm == ".." or norm.startswith("../"))


def check_snapshot(data: bytes) -> int:
    """Raise ``UnsafeSnapshot`` naming the first bad entry; returns the number of entries."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UnsafeSnapshot(f"not a readable tar: {e}") from e
    for m in members:
        if not _inside(m.name):
            raise UnsafeSnapshot(f"entry {m.name!r} leaves the workspace")
        if m.isdev() or m.isfifo():
            raise UnsafeSnapshot(f"entry {m.name!r} is a device or fifo")
        if m.issym() and not _inside(posixpath.join(posixpath.dirname(m.name), m.linkname)):
            raise UnsafeSnapshot(f"symlink {m.name!r} -> {m.linkname!r} points outside the workspace")
        if m.islnk() and not _inside(m.linkname):
            raise UnsafeSnapshot(f"hard link {m.name!r} -> {m.linkname!r} points outside the workspace")
    return len(members)
