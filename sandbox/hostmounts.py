"""Host mounts that keep host paths out of a sandbox's /proc/self/mountinfo.

A bind mount shows, inside the sandbox, the path of its source *within the source's filesystem*:
binding ``/srv/astraforge/control/sb-1`` from the host's root filesystem shows that whole path.
Binding the root of a filesystem of its own shows ``/`` instead. So each control directory (and
the supervisor's code directory) is a small tmpfs mounted on the host, and bubblewrap's root is a
read-only overlay whose layers are named through ``/proc/self/fd/N`` (the kernel shows the option
as it was given, not the directory it resolved to).

Needs CAP_SYS_ADMIN on the host (the platform already runs as root to chown and to drive bwrap).
"""

import contextlib
import ctypes
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from astraforge.errors import AstraForgeError

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class MountError(AstraForgeError, OSError):
    """A host mount the sandbox's isolation depends on could not be made."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise MountError(err, f"{what}: {os.strerror(err)}")


def mount_tmpfs(target: Path, *, uid: int, gid: int, mode: int, size_kb: int, read_only: bool = False) -> None:
    """A fresh, size-capped tmpfs on ``target`` (an existing, empty directory), owned by uid:gid."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if read_only else 0)
    data = f"size={size_kb}k,mode={mode:o},uid={uid},gid={gid}".encode()
    _check(_libc.mount(b"astraforge", os.fsencode(target), b"tmpfs", flags, data), f"mount tmpfs on {target}")


def remount_read_only(target: Path) -> None:
    MS_REMOUNT = 32
    flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(_libc.mount(None, os.fsencode(target), None, flags, None), f"remount {target} read-only")


def mount_overlay_read_only(lower: Path, empty: Path, target: Path) -> None:
    """``lower`` seen read-only at ``target`` as a filesystem of its own (root ``/`` in mountinfo).

    overlayfs needs two lower layers when it has no upper one; ``empty`` is an empty directory.
    """
    fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in (lower, empty)]
    try:
        data = "lowerdir=" + ":".join(f"/proc/self/fd/{fd}" for fd in fds)
        flags = MS_RDONLY | MS_NODEV
        _check(_libc.mount(b"astraforge", os.fsencode(target), b"overlay", flags, data.encode()), f"overlay {target}")
    finally:
        for fd in fds:
            os.close(fd)


def unmount(target: Path) -> None:
    """Detach whatever is mounted on ``target``; nothing if nothing is."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        err = ctypes.get_errno()
        raise MountError(err, f"unmount {target}: {os.strerror(err)}")


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Serialise one-time mounts between processes sharing a runtime directory."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
