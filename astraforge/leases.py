"""File leases on a shared sandbox: while a lease lasts, only its holder may write that file.

Several conversations (and API clients) may work in one sandbox, the blackboard. Before an agent
writes or edits a file it takes the file's lease; a second agent asking for the same file before the
lease expires is refused with the holder's name and the expiry (the API answers 409). A holder that
writes again extends its own lease; a holder that crashed loses it at expiry, never later.

Where leases live: in PostgreSQL (``file_leases``, a control table beside the API keys), taken with one
atomic ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` so two API or processor instances asking at the
same moment get one winner, and expiry is judged by the database's one clock (not each instance's).
Not in a processor's faust table: the writers of one sandbox's files are conversations of any
partition and API instances, none of which owns the sandbox's partition, and each would have to await
the owner's answer for every write. Every grant, refusal and release is also a record on the
sandbox's stream (``lease.acquired`` / ``lease.refused`` / ``lease.released``), so the audit log shows
who held what; the table is the lock, the records are the history.

Writes that ask for a lease (the agent's write/edit tools, API uploads naming a holder) are refused
while another holder's lasts; a shell command cannot ask, so the sandbox processor checks around it
instead and puts back what it changed (``processors/sandboxes/lease_guard.py`` says what that
guarantees and what not).
"""

import posixpath
from dataclasses import dataclass
from datetime import datetime

import psycopg

from astraforge.errors import AstraForgeError

DEFAULT_TTL_S = 60.0
MAX_TTL_S = 3600.0
# leases in force in one sandbox: every other actor's command fingerprints each of them (and keeps
# its bytes) before it starts and again when it ends, so their number is a cost on every command
MAX_LEASES = 1000
WORKDIR = "/workspace"  # where a relative path is, as for the sandbox's file API

ACQUIRE = """
INSERT INTO file_leases AS l (tenant_id, sandbox_id, path, holder, acquired_at, expires_at)
VALUES (%(tenant)s, %(sandbox)s, %(path)s, %(holder)s, now(), now() + make_interval(secs => %(ttl)s))
ON CONFLICT (sandbox_id, path) DO UPDATE
   SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, tenant_id = EXCLUDED.tenant_id,
       acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() THEN l.acquired_at
                          ELSE EXCLUDED.acquired_at END
 WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
RETURNING holder, acquired_at, expires_at
"""
OTHERS_IN_FORCE = "SELECT count(*) FROM file_leases WHERE sandbox_id = %s AND path <> %s AND expires_at > now()"
HELD = (
    "SELECT holder, acquired_at, expires_at FROM file_leases WHERE sandbox_id = %s AND path = %s AND expires_at > now()"
)
RELEASE = (
    "DELETE FROM file_leases WHERE sandbox_id = %s AND path = %s AND holder = %s AND expires_at > now()"
    " RETURNING holder, acquired_at, expires_at"
)
RELEASE_ALL = "DELETE FROM file_leases WHERE sandbox_id = %s AND holder = %s RETURNING path, expires_at"
LIST = (
    "SELECT path, holder, acquired_at, expires_at FROM file_leases"
    " WHERE tenant_id = %s AND sandbox_id = %s AND expires_at > now() ORDER BY path"
)


@dataclass(frozen=True)
class FileLease:
    sandbox_id: str
    path: str
    holder: str
    acquired_at: datetime
    expires_at: datetime

    @property
    def expires_micros(self) -> int:
        return int(self.expires_at.timestamp() * 1_000_000)


@dataclass(frozen=True)
class LeaseOutcome:
    """``granted`` (the caller holds ``lease``) or refused (``lease`` is the other holder's)."""

    granted: bool
    lease: FileLease

    def refusal(self) -> str:
        """What the refused caller is told: who holds the file, until when."""
        return (
            f"lease_held: {self.lease.path} is leased by {self.lease.holder} "
            f"until {self.lease.expires_at.isoformat(timespec='seconds')}"
        )


class TooManyLeases(AstraForgeError):
    """The sandbox has ``MAX_LEASES`` leases in force already (the API answers 429)."""


def canonical(path: str) -> str:
    """The one spelling of a file's path a lease is keyed by: ``/workspace/./a//b.txt``,
    ``//workspace/a/../a/b.txt`` and ``a/b.txt`` are all ``/workspace/a/b.txt`` (else a second holder
    takes the same file under another spelling, and a write spelled differently misses the lease)."""
    absolute = path if path.startswith("/") else f"{WORKDIR}/{path}"
    return posixpath.normpath("/" + absolute.lstrip("/"))  # normpath keeps a leading "//"


def _lease(sandbox_id: str, path: str, row: tuple) -> FileLease:
    return FileLease(sandbox_id, path, row[0], row[1], row[2])


def _ttl(ttl_s: float) -> float:
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"a lease lasts between 0 and {MAX_TTL_S:.0f} seconds, not {ttl_s}")
    return ttl_s


def acquire(
    conn: psycopg.Connection, tenant: str, sandbox_id: str, path: str, holder: str, ttl_s: float = DEFAULT_TTL_S
) -> LeaseOutcome:
    """Take (or extend) the lease on ``path`` for ``holder``; refused while another holder's lasts.
    ``TooManyLeases`` past ``MAX_LEASES`` in the sandbox (two takers at once may both get the last
    place: the bound is approximate by the number of concurrent takers)."""
    path = canonical(path)
    params = {"tenant": tenant, "sandbox": sandbox_id, "path": path, "holder": holder, "ttl": _ttl(ttl_s)}
    for _ in range(3):  # the other holder's lease may expire (and be deleted) between the two statements
        with conn.transaction():
            others = _values(conn.execute(OTHERS_IN_FORCE, (sandbox_id, path)).fetchone())[0]
            if others >= MAX_LEASES:
                raise TooManyLeases(
                    f"too_many_leases: {sandbox_id} has {others} leases in force (at most {MAX_LEASES})"
                )
            row = conn.execute(ACQUIRE, params, prepare=False).fetchone()
            if row is not None:
                return LeaseOutcome(True, _lease(sandbox_id, path, _values(row)))
            held = conn.execute(HELD, (sandbox_id, path)).fetchone()
            if held is not None:
                return LeaseOutcome(False, _lease(sandbox_id, path, _values(held)))
    raise RuntimeError(f"lease on {path} changed hands three times in a row")


def release(conn: psycopg.Connection, sandbox_id: str, path: str, holder: str) -> FileLease | None:
    """Give a lease up (only its holder can); the lease given up, or None if it held none."""
    path = canonical(path)
    with conn.transaction():
        row = conn.execute(RELEASE, (sandbox_id, path, holder)).fetchone()
    return None if row is None else _lease(sandbox_id, path, _values(row))


def held(conn: psycopg.Connection, tenant: str, sandbox_id: str) -> list[FileLease]:
    """The sandbox's leases still in force, by path."""
    rows = conn.execute(LIST, (tenant, sandbox_id)).fetchall()
    return [_lease(sandbox_id, v[0], v[1:]) for v in map(_values, rows)]


def release_all(conn: psycopg.Connection, sandbox_id: str, holder: str) -> list[str]:
    """Every lease ``holder`` has in the sandbox, given up (a reply ended): their paths."""
    with conn.transaction():
        return [_values(r)[0] for r in conn.execute(RELEASE_ALL, (sandbox_id, holder)).fetchall()]


def _values(row) -> tuple:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)
