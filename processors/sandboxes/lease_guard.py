"""Leases that hold against shell commands: detect and restore around a non-holder's command.

A lease (``astraforge.leases``) says one actor edits a file. The write/edit tools and the file API
ask for it; a shell command cannot be asked (``echo x > f``, ``mv other f``, ``rm f``, a write through a
hard link or ``/proc/self/fd`` are all just a process writing). So the sandbox processor watches: before
a command of actor B starts, it fingerprints every file another actor holds a lease on in that sandbox
(the supervisor's ``fingerprint``: kind, sha256 and mode of what is at the path itself, no symlink
followed) and keeps the holder's bytes; when the command ends it fingerprints them again. A file that
changed is put back (written back whole, replacing whatever now sits at the path, a symlink included;
a file that did not exist is removed again), and the command's answer and a ``lease.violated`` record
name the file, its holder, the command and its actor.

Writes by the holder while B's command runs are the holder's. A holder's file write (the file API,
the agent's write tool) and B's checks take turns (one lock per sandbox): after the write, the
file it wrote is fingerprinted again and that is what B's check compares with. A holder's
*command* cannot be told apart from B's by what it leaves, so a file whose holder ran a command
while B's was watched is not put back nor blamed on B.

Guaranteed (for a command accepted after the lease is in force, on a supervisor that speaks
``fingerprint``; a command that starts with its accept has its leases read and fingerprinted while
the broker acknowledges the accept, the others as they start; never after it starts): when it
ends, each file leased by someone else holds the content and mode it had before it started (or the
holder's later file writes), whatever the command did to the path, unless the holder ran a command
meanwhile; each change is reported to the command's caller and recorded against its actor.
Not guaranteed: the file is changed *while* the command runs (readers in between see B's bytes); a
process the command leaves running (``exec.detached``) may change it after the check; a change made
while a holder's own command also ran is taken as the holder's; a lease taken after the command
was accepted guards from the next command on; files over ``max_file_bytes`` (not hashed: a sparse
terabyte is made in a moment, and hashing it held the check past its timeout, unchecked; their
change is told by inode, size and ctime), files past the processor's ``lease_guard_kept_bytes`` (the copies all watched
commands keep at once), a path the command made unreachable (its directory's permission taken away),
a file turned into a directory with something in it, and one reached through a directory swapped for
a symlink are reported, not put back; a command
re-attached by a new partition owner, or run while PostgreSQL cannot be read, is not watched (logged).
"""

import collections
import contextlib
import logging
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg

from astraforge.artifacts import spool
from astraforge.config import Settings
from astraforge.db import connect
from astraforge.errors import AstraForgeError
from astraforge.sandbox.client import SupervisorClient, SupervisorError, SupervisorUnavailable

LOG = logging.getLogger(__name__)
CHECK_LOCKS = 64  # striped by sandbox id: a holder's file write and the checks of that sandbox take turns
OTHERS = (
    "SELECT path, holder FROM file_leases WHERE sandbox_id = %s AND holder <> %s AND expires_at > now() ORDER BY path"
)


@dataclass
class Guarded:
    """One leased file as its holder left it: its fingerprint and (a file within bounds) its bytes."""

    path: str
    holder: str
    fingerprint: dict
    content: object | None = None  # a spool with the bytes, or None (not a file, too large, no room)
    kept: int = 0  # bytes of the processor's ``lease_guard_kept_bytes`` this copy takes


@dataclass(frozen=True)
class Violation:
    path: str
    holder: str
    found: str  # what the command left at the path: changed | deleted | symlink | redirected | other
    restored: bool

    def message(self) -> str:
        undone = "the change was undone" if self.restored else "it could not be put back"
        return f"{self.path} is leased by {self.holder}; this command {_verb(self.found)} and {undone}"


@dataclass
class Watch:
    """The files one command of ``actor`` must leave as their holders have them, and who else ran
    commands while it was watched (a change to a file they hold may be theirs)."""

    sandbox_id: str
    actor: str
    files: dict[str, Guarded] = field(default_factory=dict)
    overlapped: set[str] = field(default_factory=set)


def _verb(found: str) -> str:
    return {"deleted": "deleted it", "symlink": "replaced it with a symlink", "created": "created it",
            "redirected": "made a directory on its path a symlink", "unreachable": "made it unreachable",
            "other": "replaced it with something not a file"}.get(found, "changed it")  # fmt: skip


def _same(a: dict, b: dict) -> bool:
    return (a["kind"], a["sha256"], a.get("mode")) == (b["kind"], b["sha256"], b.get("mode"))


def _found(before: dict, now: dict) -> str:
    if now["kind"] == "missing":
        return "deleted"
    if before["kind"] == "missing":
        return "created"
    return {"file": "changed"}.get(now["kind"], now["kind"])


class LeaseGuard:
    """Fingerprints leased files around commands of actors who do not hold them (one per processor)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection | None = None
        self._closed = False  # the processor stopped: no connection is opened again
        self._db_lock = threading.Lock()
        self._watches: dict[str, list[Watch]] = {}  # sandbox id -> the commands watched now
        self._active: dict[str, collections.Counter[str]] = {}  # sandbox id -> actors running commands
        self._kept = 0  # bytes kept by all watches (within settings.lease_guard_kept_bytes)
        self._lock = threading.Lock()  # the two maps above and _kept
        self._check_locks = [threading.Lock() for _ in range(CHECK_LOCKS)]

    def close(self) -> None:
        with self._db_lock, contextlib.suppress(Exception):
            self._closed = True
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    def _check_lock(self, sandbox_id: str) -> threading.Lock:
        return self._check_locks[zlib.crc32(sandbox_id.encode()) % CHECK_LOCKS]

    def _others(self, sandbox_id: str, actor: str) -> list[tuple[str, str]]:
        """The files someone other than ``actor`` holds a lease on in the sandbox (one query on a kept
        connection: this runs before every command)."""
        with self._db_lock:
            if self._closed:
                raise AstraForgeError("the processor stopped")
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        # a database that hangs must not hold every command up: past 2 s, unwatched
                        self._conn = connect(self.settings, autocommit=True, options="-c statement_timeout=2000")
                    rows = self._conn.execute(OTHERS, (sandbox_id, actor), prepare=True).fetchall()
                    return [(r["path"], r["holder"]) for r in rows]
                except (psycopg.Error, AstraForgeError):
                    with contextlib.suppress(Exception):
                        if self._conn is not None:
                            self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
        return []

    # -- who runs commands now -------------------------------------------------------------------
    def began(self, sandbox_id: str, actor: str) -> None:
        """A command of ``actor`` starts: every command watched now overlaps it."""
        with self._lock:
            self._active.setdefault(sandbox_id, collections.Counter())[actor] += 1
            for watch in self._watches.get(sandbox_id, []):
                watch.overlapped.add(actor)

    def ended(self, sandbox_id: str, actor: str) -> None:
        with self._lock:
            active = self._active.get(sandbox_id)
            if active is None:
                return
            active[actor] -= 1
            if active[actor] <= 0:
                del active[actor]
            if not active:
                del self._active[sandbox_id]

    # -- around a command ------------------------------------------------------------------------
    def read(self, sandbox_id: str, actor: str) -> list[tuple[str, str]] | None:
        """The files someone other than ``actor`` holds in the sandbox, or None when PostgreSQL cannot
        be read (logged: the command runs unwatched)."""
        try:
            return self._others(sandbox_id, actor)
        except (psycopg.Error, AstraForgeError) as e:
            LOG.warning("leases of %s unreadable (%s): %s's command runs unwatched", sandbox_id, e, actor)
            return None

    def before(self, client: SupervisorClient, sandbox_id: str, actor: str) -> Watch | None:
        """Start watching the files other actors hold, for a command of ``actor`` about to start; None
        when there are none (or they cannot be watched: logged, the command runs unwatched)."""
        held = self.read(sandbox_id, actor)
        if not held:
            return None
        watch = Watch(sandbox_id, actor, {path: Guarded(path, holder, {}) for path, holder in held})
        with self._check_lock(sandbox_id):
            try:
                self._load(client, list(watch.files.values()))
            except (SupervisorError, SupervisorUnavailable, OSError) as e:
                LOG.warning("leased files of %s not fingerprinted (%s): %s's command runs unwatched", sandbox_id, e,
                            actor)  # fmt: skip
                self._close(watch)
                return None
            with self._lock:
                watch.overlapped.update(self._active.get(sandbox_id, ()))
                self._watches.setdefault(sandbox_id, []).append(watch)
        return watch

    def _load(self, client: SupervisorClient, items: list[Guarded]) -> None:
        """Fingerprint ``items`` and keep each regular file's bytes (within ``max_file_bytes``, and
        while the processor's ``lease_guard_kept_bytes`` has room: every watched command keeps its own
        copy, and one tenant's leases on many large files, times its concurrent commands, filled the
        processor's disk)."""
        prints = client.fingerprint([g.path for g in items], self.settings.max_file_bytes)
        for g in items:
            self._drop(g)
            g.fingerprint = prints[g.path]
            size = g.fingerprint["size"]
            if g.fingerprint["kind"] != "file" or size > self.settings.max_file_bytes:
                continue
            if not self._reserve(size):
                LOG.warning("no room to keep %s (%d bytes) of %s: a change is reported, not put back", g.path,
                            size, g.holder)  # fmt: skip
                continue
            g.kept, content = size, spool()
            try:
                read = client.read_into(g.path, content, size, exact=True)  # grown since: not kept
            except (SupervisorError, OSError):
                content.close()
                self._drop(g)
                continue
            if read["sha256"] != g.fingerprint["sha256"]:  # changed between the two: whose bytes is unknown
                LOG.warning("%s changed while it was kept: a change is reported, not put back", g.path)
                content.close()
                self._drop(g)
                continue
            g.content = content

    def _reserve(self, size: int) -> bool:
        with self._lock:
            if self._kept + size > self.settings.lease_guard_kept_bytes:
                return False
            self._kept += size
            return True

    def _drop(self, g: Guarded) -> None:
        """Let go of the bytes kept of ``g`` (and their room)."""
        if g.content is not None:
            g.content.close()
            g.content = None
        with self._lock:
            self._kept -= g.kept
            g.kept = 0

    def forget(self, watch: Watch) -> None:
        """Stop watching (no check)."""
        with self._lock:
            watches = self._watches.get(watch.sandbox_id, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._watches.pop(watch.sandbox_id, None)

    def after(self, client: SupervisorClient | None, watch: Watch | None) -> list[Violation]:
        """Stop watching; each leased file the command left changed, put back as far as possible."""
        if watch is None:
            return []
        with self._check_lock(watch.sandbox_id):
            self.forget(watch)
            try:
                if client is None:
                    raise SupervisorUnavailable("sandbox is gone")
                now = client.fingerprint(list(watch.files), self.settings.max_file_bytes)
                changed = [g for g in watch.files.values() if not _same(g.fingerprint, now[g.path])]
                theirs = [g for g in changed if g.holder in watch.overlapped]
                for g in theirs:
                    LOG.info("%s changed while %s's command and its holder %s's both ran: taken as the holder's",
                             g.path, watch.actor, g.holder)  # fmt: skip
                return [self._restore(client, g, now[g.path]) for g in changed if g not in theirs]
            except (SupervisorError, SupervisorUnavailable, OSError) as e:
                LOG.warning("leased files of %s not checked after %s's command: %s", watch.sandbox_id, watch.actor, e)
                return []
            finally:
                self._close(watch)

    def _restore(self, client: SupervisorClient, g: Guarded, now: dict) -> Violation:
        before = g.fingerprint
        restored = False
        try:
            if before["kind"] == "missing":
                client.unlink(g.path)
                restored = True
            elif g.content is not None:
                if now["kind"] == "other":  # a directory (an empty one goes), a FIFO: a write cannot replace it
                    client.unlink(g.path)
                g.content.seek(0)
                client.write_file(g.path, g.content, before["size"], before.get("mode") or 0o644, exact=True)
                restored = True
        except (SupervisorError, SupervisorUnavailable, OSError) as e:
            LOG.warning("could not put back %s (leased by %s): %s", g.path, g.holder, e)
        return Violation(g.path, g.holder, _found(before, now), restored)

    # -- a holder's file write -------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, client: SupervisorClient, sandbox_id: str, actor: str, path: str) -> Iterator[None]:
        """Around a file write of ``actor`` to ``path`` (canonical) through the platform: no check of the
        sandbox runs during it, and afterwards, if ``actor`` holds ``path``, every command watched
        compares it with what ``actor`` wrote. Only that file: another file ``actor`` holds that a
        watched command changed meanwhile stays that command's change (put back when it ends)."""
        with self._check_lock(sandbox_id):
            try:
                yield
            finally:
                with self._lock:
                    held = [
                        g
                        for w in self._watches.get(sandbox_id, [])
                        for g in w.files.values()
                        if g.holder == actor and g.path == path
                    ]
                if held:
                    try:
                        self._load(client, held)
                    except Exception as e:  # never fail the write itself: it happened
                        LOG.warning("leased files of %s not fingerprinted after %s wrote: %s", sandbox_id, actor, e)

    def _close(self, watch: Watch) -> None:
        for g in watch.files.values():
            self._drop(g)


class CommandCheck:
    """The guard around one command: ``start`` as it starts, ``finish`` (or ``drop``) once it ended."""

    def __init__(self, guard: LeaseGuard, sandbox_id: str, actor: str) -> None:
        self.guard = guard
        self.sandbox_id = sandbox_id
        self.actor = actor
        self.client: SupervisorClient | None = None
        self.watch: Watch | None = None
        self.started = False

    def start(self, client: SupervisorClient) -> None:
        """Never raises: a guard that fails leaves the command unwatched (logged), never unrun."""
        self.client = client
        self.guard.began(self.sandbox_id, self.actor)
        self.started = True
        try:
            self.watch = self.guard.before(client, self.sandbox_id, self.actor)
        except Exception:
            LOG.exception("lease guard failed before %s's command on %s: unwatched", self.actor, self.sandbox_id)

    def finish(self) -> list[Violation]:
        """What the command did to others' leased files (put back as their holders had them). Never
        raises: the command's end is recorded whatever the guard meets."""
        try:
            return self.guard.after(self.client, self.watch)
        except Exception:
            LOG.exception("lease guard failed after %s's command on %s", self.actor, self.sandbox_id)
            return []
        finally:
            self._end()

    def drop(self) -> None:
        """The command goes on unobserved here (its partition moved): stop watching, change nothing."""
        if self.watch is not None:
            self.guard.forget(self.watch)
            self.guard._close(self.watch)
        self._end()

    def _end(self) -> None:
        self.watch = None
        if self.started:
            self.started = False
            self.guard.ended(self.sandbox_id, self.actor)
