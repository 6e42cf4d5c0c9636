"""Rebuild a projection from offset 0 into a fresh schema, compare it with the live one, swap.

Because every projected column derives from the records alone, a rebuild of the same log must
equal the live tables row for row; ``compare`` proves it (EXCEPT ALL both ways, per table).
"""

from collections.abc import Callable

from psycopg import sql

from astraforge.config import Settings
from astraforge.db import connect
from astraforge.projections.postgres import Projector, ProjectorRunning, drop_schema, projector_lock

TABLES = ("events", "streams", "runs", "sandboxes", "execs", "artifacts", "conversations", "consumer_offsets")


def rebuild(settings: Settings, into: str, progress: Callable[[Projector], None] | None = None) -> Projector:
    """Drop ``into``, then project every record written so far into it."""
    if into == settings.projection_schema:
        raise ValueError("rebuild into a fresh schema, not the live one (use --swap to make it live)")
    with connect(settings, autocommit=True) as conn:
        drop_schema(conn, into)
    projector = Projector(settings, schema=into)
    projector.run_until_caught_up(progress)
    return projector


def compare(settings: Settings, a: str, b: str, tables: tuple[str, ...] = TABLES) -> dict[str, tuple[int, int]]:
    """Per table: (rows only in ``a``, rows only in ``b``). All zeros means identical."""
    out = {}
    with connect(settings) as conn:
        for table in tables:
            ta, tb = sql.Identifier(a, table), sql.Identifier(b, table)
            only = sql.SQL("SELECT count(*) AS n FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {}) d")
            only_a = conn.execute(only.format(ta, tb)).fetchone()["n"]
            only_b = conn.execute(only.format(tb, ta)).fetchone()["n"]
            out[table] = (only_a, only_b)
    return out


def swap(settings: Settings, rebuilt: str, retired: str) -> None:
    """Atomically make ``rebuilt`` the live schema; the old one is kept as ``retired``.

    Takes the live schema's projector lock first (the one ``Projector._assign`` holds): a
    projector still writing the live schema would otherwise carry on into the retired one."""
    live = settings.projection_schema
    with connect(settings) as conn, conn.transaction():
        locked = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s)) AS ok", (projector_lock(live),))
        if not locked.fetchone()["ok"]:
            raise ProjectorRunning(f"a projector is writing schema {live!r}: stop it before swapping")
        drop_schema(conn, retired)
        conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(live), sql.Identifier(retired)))
        conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(rebuilt), sql.Identifier(live)))
