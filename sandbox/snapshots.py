"""Workspace snapshots: a gzip'd tar of /workspace made inside the sandbox, stored as an artifact,
and checked on the host before it is restored into a new sandbox.

A snapshot is data a sandbox produced, so it is untrusted: restore refuses absolute paths, ``..``
components, links that point outside the workspace, and device or fifo entries, before any byte
reaches the new sandbox (where it is unpacked by the sandbox user, inside its own tmpfs).
"""

import io
import tarfile
import zlib
from typing import BinaryIO

from astraforge.errors import ValidationError

SNAPSHOT_COMMAND = ["tar", "-C", "/workspace", "-czf", "-", "."]
RESTORE_COMMAND = ["tar", "-xzf", "-", "-C", "/workspace"]  # the archive arrives on stdin: never staged


class UnsafeSnapshot(ValidationError):
    """The snapshot tar would write outside /workspace (or holds devices)."""


MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit
# deeper than any real tree; a workspace nested 1,500 deep cost minutes of host CPU per capture (the
# data filter's realpath walks every level of every entry) and broke shutil.rmtree (it recurses)
MAX_DEPTH = 256


class _Workspace:
    """The links a tar has created so far, so every later path is resolved the way the extracting
    tar will walk it: ``x/y -> ..`` then ``x/y/z -> ..`` is harmless lexically, but ``x/y/z`` is
    really ``z`` and that link points above the workspace."""

    def __init__(self) -> None:
        self.links: dict[str, str] = {}  # resolved path (no leading ./) -> link target as written

    def resolve(self, path: str, follow_last: bool = True) -> str | None:
        """The path's real place under the workspace root, or None if it leaves it (or loops).
        Linear in the path's length: each component's prefix is built from the last one's."""
        if path.startswith("/"):
            return None
        todo = [c for c in reversed(path.split("/")) if c not in ("", ".")]  # next component last
        done: list[str] = []  # done[i]: the resolved path of the first i + 1 components
        hops = 0
        while todo:
            part = todo.pop()
            if part == "..":
                if not done:
                    return None
                done.pop()
                continue
            here = f"{done[-1]}/{part}" if done else part
            target = self.links.get(here)
            if target is not None and (todo or follow_last):
                hops += 1
                if hops > MAX_LINK_HOPS or target.startswith("/"):
                    return None
                todo.extend(c for c in reversed(target.split("/")) if c not in ("", "."))
                continue
            done.append(here)
        return done[-1] if done else ""

    def add(self, m: tarfile.TarInfo) -> None:
        for name in (m.name, m.linkname):
            if name.count("/") >= MAX_DEPTH and sum(c not in ("", ".") for c in name.split("/")) > MAX_DEPTH:
                raise UnsafeSnapshot(f"entry {m.name[:100]!r} (shortened) nests deeper than {MAX_DEPTH} levels")
        where = self.resolve(m.name, follow_last=False)  # the entry itself is replaced, its parents are walked
        if where is None:
            raise UnsafeSnapshot(f"entry {m.name!r} leaves the workspace")
        if m.isdev() or m.isfifo():
            raise UnsafeSnapshot(f"entry {m.name!r} is a device or fifo")
        if m.islnk() and self.resolve(m.linkname) is None:
            raise UnsafeSnapshot(f"hard link {m.name!r} -> {m.linkname!r} points outside the workspace")
        if m.issym():  # (a later entry of the same name is assumed not to replace it: the safe side)
            if not where:
                raise UnsafeSnapshot(f"symlink {m.name!r} replaces the workspace root")
            self.links[where] = m.linkname
            self._check_link(where, m.linkname)

    def _check_link(self, where: str, target: str) -> None:
        parent = where.rpartition("/")[0]
        if target.startswith("/") or self.resolve(f"{parent}/{target}" if parent else target) is None:
            raise UnsafeSnapshot(f"symlink {where!r} -> {target!r} points outside the workspace")

    def check_links(self) -> None:
        """Every link, resolved against all the others (a later link can redirect an earlier one)."""
        for where, target in self.links.items():
            self._check_link(where, target)


def check_snapshot(source: bytes | BinaryIO, max_entries: int = 100_000, max_bytes: int | None = None) -> int:
    """Raise ``UnsafeSnapshot`` naming the first bad entry, past ``max_entries``, or once the
    entries' sizes pass ``max_bytes`` (the workspace it is restored into: it could not hold more),
    checked at each entry's header before its data is read: both bound the work a hostile archive
    causes here (gzip packs zeros ~1000:1, so the compressed size bounds nothing). Returns the
    number of entries. Reads the archive as a stream, entry by entry: it is never held whole."""
    fileobj = io.BytesIO(source) if isinstance(source, bytes) else source
    workspace, count, unpacked = _Workspace(), 0, 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for m in tar:
                count += 1
                if count > max_entries:
                    raise UnsafeSnapshot(f"more than {max_entries} entries")
                unpacked += m.size
                if max_bytes is not None and unpacked > max_bytes:
                    raise UnsafeSnapshot(f"unpacks to more than the workspace's {max_bytes} bytes (at {m.name!r})")
                workspace.add(m)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise UnsafeSnapshot(f"not a readable tar: {e}") from e
    workspace.check_links()
    return count
