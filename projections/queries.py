"""Read-side queries over the projection schema, shared by the API and the audit tools."""

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from psycopg import AsyncConnection, sql

EVENT_FIELDS = sql.SQL(
    'partition, "offset", event_id, type, stream_id, sandbox_id, occurred_at, actor, causation_id,'
    " correlation_id, payload"
)

# The columns of one SSE frame's JSON (row_to_json of this row), as the API's live frames
# (api/frames.py) carry it: the EventPublic fields in order, compact, occurred_at as ISO-8601 UTC
# with microseconds and a Z; only the payload keeps jsonb's text form (a space after ':' and ','),
# the same JSON values.
SSE_EVENT = sql.SQL(
    """SELECT "offset", partition, event_id, type, stream_id, sandbox_id,"""
    """ to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at, actor,"""
    """ causation_id, correlation_id, payload FROM {}.events"""
)


@asynccontextmanager
async def _in_offset_order(conn: AsyncConnection) -> AsyncIterator[None]:
    """A transaction in which the planner may not sort: a stream written since the last ANALYZE looks
    tiny to it, and it then sorts *every* later row of the stream for each page (26 ms a page at 50k
    rows here, quadratic in the stream's length) instead of walking ``events_by_stream`` in order
    (0.8 ms)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_sort = off")
        yield


def contains_pattern(text: str) -> str:
    """A LIKE pattern matching any value that contains ``text`` literally (its ``%``, ``_`` and ``\\``
    escaped with LIKE's default escape character)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Executor(Protocol):
    """A psycopg AsyncConnection, or anything that runs one statement the same way
    (the API's ``StatementConnection``)."""

    async def execute(self, query: Any, params: Any = None) -> Any: ...


@functools.cache
def queries_for(schema: str) -> "ProjectionQueries":
    """One ``ProjectionQueries`` per schema (it holds only composed statements): a request builds none."""
    return ProjectionQueries(schema)


class ProjectionQueries:
    """Tenant-scoped reads of one projection schema."""

    def __init__(self, schema: str) -> None:
        self.schema = sql.Identifier(schema)
        projected = (
            " ARRAY(SELECT sandbox_id FROM {0}.sandboxes WHERE tenant_id = %s AND sandbox_id = ANY(%s)"
            " UNION ALL SELECT command_id FROM {0}.execs WHERE tenant_id = %s AND command_id = ANY(%s)) AS projected"
        )
        self._sandbox_usage = sql.SQL(
            "SELECT count(*) AS sandboxes, coalesce(sum(memory_mb), 0) AS memory_mb," + projected + " FROM"
            " {0}.sandboxes WHERE tenant_id = %s AND state NOT IN ('terminated', 'failed')"
        ).format(self.schema)
        self._exec_usage = sql.SQL(
            "SELECT (SELECT count(*) FROM {0}.execs WHERE tenant_id = %s AND state = 'running') AS execs," + projected
        ).format(self.schema)

        self._exec_usage_in = sql.SQL(
            "SELECT (SELECT state FROM {0}.sandboxes WHERE sandbox_id = %s AND tenant_id = %s) AS sandbox_state,"
            " (SELECT count(*) FROM {0}.execs WHERE tenant_id = %s AND state = 'running') AS execs," + projected
        ).format(self.schema)

    async def stream(self, conn: Executor, tenant_id: str, stream_id: str) -> dict | None:
        cur = await conn.execute(
            sql.SQL("SELECT * FROM {}.streams WHERE stream_id = %s AND tenant_id = %s").format(self.schema),
            (stream_id, tenant_id),
        )
        return await cur.fetchone()

    async def stream_exists_elsewhere(self, conn: Executor, tenant_id: str, stream_id: str) -> bool:
        cur = await conn.execute(
            sql.SQL("SELECT 1 FROM {}.streams WHERE stream_id = %s AND tenant_id <> %s").format(self.schema),
            (stream_id, tenant_id),
        )
        return await cur.fetchone() is not None

    async def streams(self, conn: Executor, tenant_id: str, after: str, limit: int) -> list[dict]:
        cur = await conn.execute(
            sql.SQL(
                "SELECT * FROM {}.streams WHERE tenant_id = %s AND stream_id > %s ORDER BY stream_id LIMIT %s"
            ).format(self.schema),
            (tenant_id, after, limit),
        )
        return await cur.fetchall()

    async def events(self, conn: AsyncConnection, tenant_id: str, stream_id: str, after: int, limit: int) -> list[dict]:
        """A page of the stream's records after ``after`` (walked in index order: ``_in_offset_order``)."""
        async with _in_offset_order(conn):
            cur = await conn.execute(
                sql.SQL(
                    'SELECT {} FROM {}.events WHERE stream_id = %s AND tenant_id = %s AND "offset" > %s'
                    ' ORDER BY "offset" LIMIT %s'
                ).format(EVENT_FIELDS, self.schema),
                (stream_id, tenant_id, after, limit),
            )
            return await cur.fetchall()

    async def event_frames(
        self, conn: AsyncConnection, tenant_id: str, stream_id: str, after: int, limit: int
    ) -> tuple[int, int, str]:
        """The next ``limit`` events after ``after`` as SSE frames, built by PostgreSQL:
        (how many, the last offset, the frames' text)."""
        async with _in_offset_order(conn):
            cur = await conn.execute(
                sql.SQL(
                    'SELECT count(*) AS n, max(e."offset") AS last, coalesce(string_agg(\'id: \' || e."offset"'
                    " || E'\\nevent: ' || e.type || E'\\ndata: ' || row_to_json(e)::text || E'\\n\\n', ''"
                    " ORDER BY e.\"offset\"), '') AS text FROM ({} WHERE stream_id = %s AND tenant_id = %s"
                    ' AND "offset" > %s ORDER BY "offset" LIMIT %s) AS e'
                ).format(SSE_EVENT.format(self.schema)),
                (stream_id, tenant_id, after, limit),
            )
            row = await cur.fetchone()
        return row["n"], row["last"], row["text"]

    async def answers(
        self, conn: Executor, tenant_id: str, stream_id: str, types: list[str], key: str | None, value: str | None
    ) -> list[dict]:
        """A stream's records of ``types`` whose ``payload[key]`` is ``value`` (all of them when
        ``key`` is None), in offset order: the answer to one command."""
        match = sql.SQL("AND payload ->> %s = %s") if key is not None else sql.SQL("")
        cur = await conn.execute(
            sql.SQL(
                "SELECT type, stream_id, tenant_id, actor, sandbox_id, payload FROM {}.events WHERE stream_id = %s"
                ' AND tenant_id = %s AND type = ANY(%s) {} ORDER BY "offset"'
            ).format(self.schema, match),
            (stream_id, tenant_id, types, *((key, value) if key is not None else ())),
        )
        return await cur.fetchall()

    async def sandbox(self, conn: Executor, tenant_id: str, sandbox_id: str) -> dict | None:
        cur = await conn.execute(
            sql.SQL("SELECT * FROM {}.sandboxes WHERE sandbox_id = %s AND tenant_id = %s").format(self.schema),
            (sandbox_id, tenant_id),
        )
        return await cur.fetchone()

    async def sandboxes(self, conn: Executor, tenant_id: str, after: str, limit: int) -> list[dict]:
        cur = await conn.execute(
            sql.SQL(
                "SELECT * FROM {}.sandboxes WHERE tenant_id = %s AND sandbox_id > %s ORDER BY sandbox_id LIMIT %s"
            ).format(self.schema),
            (tenant_id, after, limit),
        )
        return await cur.fetchall()

    async def run(self, conn: Executor, tenant_id: str, run_id: str) -> dict | None:
        cur = await conn.execute(
            sql.SQL("SELECT * FROM {}.runs WHERE run_id = %s AND tenant_id = %s").format(self.schema),
            (run_id, tenant_id),
        )
        return await cur.fetchone()

    async def runs(
        self,
        conn: Executor,
        tenant_id: str,
        after: str,
        limit: int,
        state: str | None = None,
        repository: str | None = None,
        text: str | None = None,
    ) -> list[dict]:
        """A page of the tenant's runs, filtered by state, repository (exact) and text (in the
        title or the request, case-insensitive)."""
        filters, params = [], [tenant_id, after]
        if state is not None:
            filters.append(sql.SQL("AND state = %s"))
            params.append(state)
        if repository is not None:
            filters.append(sql.SQL("AND repository = %s"))
            params.append(repository)
        if text is not None:  # ILIKE on the columns themselves: their trigram indexes answer it
            filters.append(sql.SQL("AND (title ILIKE %s OR spec ILIKE %s)"))
            params += [contains_pattern(text)] * 2
        cur = await conn.execute(
            sql.SQL("SELECT * FROM {}.runs WHERE tenant_id = %s AND run_id > %s {} ORDER BY run_id LIMIT %s").format(
                self.schema, sql.SQL(" ").join(filters)
            ),
            (*params, limit),
        )
        return await cur.fetchall()

    async def conversation(self, conn: Executor, tenant_id: str, conversation_id: str) -> dict | None:
        cur = await conn.execute(
            sql.SQL("SELECT * FROM {}.conversations WHERE conversation_id = %s AND tenant_id = %s").format(self.schema),
            (conversation_id, tenant_id),
        )
        return await cur.fetchone()

    async def conversations(
        self, conn: Executor, tenant_id: str, after: str, limit: int, sandbox_id: str | None = None
    ) -> list[dict]:
        """A page of the tenant's conversations (those attached to ``sandbox_id`` only, if given)."""
        match = sql.SQL("AND sandbox_id = %s") if sandbox_id is not None else sql.SQL("")
        cur = await conn.execute(
            sql.SQL(
                "SELECT * FROM {}.conversations WHERE tenant_id = %s AND conversation_id > %s {}"
                " ORDER BY conversation_id LIMIT %s"
            ).format(self.schema, match),
            (tenant_id, after, *((sandbox_id,) if sandbox_id is not None else ()), limit),
        )
        return await cur.fetchall()

    async def artifact(self, conn: Executor, tenant_id: str, artifact_id: str) -> dict | None:
        cur = await conn.execute(
            sql.SQL(
                "SELECT * FROM {}.artifacts WHERE artifact_id = %s AND tenant_id = %s AND deleted_at IS NULL"
            ).format(self.schema),
            (artifact_id, tenant_id),
        )
        return await cur.fetchone()

    async def next_offsets(self, conn: Executor, topic: str) -> dict[int, int]:
        """Per partition, the first offset the projection has not yet written."""
        cur = await conn.execute(
            sql.SQL("SELECT partition, next_offset FROM {}.consumer_offsets WHERE topic = %s").format(self.schema),
            (topic,),
        )
        return {r["partition"]: r["next_offset"] for r in await cur.fetchall()}

    async def projected(self, conn: Executor, tenant_id: str, ids: list[str]) -> list[str]:
        """Which of these sandbox or command ids the projection shows (for quota reservations)."""
        cur = await conn.execute(
            sql.SQL(
                "SELECT sandbox_id AS id FROM {0}.sandboxes WHERE tenant_id = %s AND sandbox_id = ANY(%s)"
                " UNION ALL SELECT command_id FROM {0}.execs WHERE tenant_id = %s AND command_id = ANY(%s)"
            ).format(self.schema),
            (tenant_id, ids, tenant_id, ids),
        )
        return [row["id"] for row in await cur.fetchall()]

    async def sandbox_usage(self, conn: Executor, tenant_id: str, held: list[str]) -> dict:
        """A tenant's live sandboxes and their memory, and which of the ``held`` sandbox or command ids
        the projection shows, in one statement (one snapshot, as ``exec_usage``): what admitting a
        create needs."""
        cur = await conn.execute(self._sandbox_usage, (tenant_id, held, tenant_id, held, tenant_id))
        return await cur.fetchone()

    async def exec_usage(self, conn: Executor, tenant_id: str, held: list[str]) -> dict:
        """Running commands of a tenant, and which of the ``held`` sandbox or command ids the projection
        shows, in one statement (one snapshot: a row projected meanwhile is in both answers or neither).
        What admitting an exec needs, without ``tenant_usage``'s sums over sandboxes and artifacts."""
        cur = await conn.execute(
            self._exec_usage,
            (tenant_id, tenant_id, held, tenant_id, held),
        )
        return await cur.fetchone()

    async def exec_usage_in(self, conn: Executor, tenant_id: str, sandbox_id: str, held: list[str]) -> dict:
        """``exec_usage`` plus the state of the tenant's sandbox ``sandbox_id`` (``sandbox_state``,
        None if the projection shows no such sandbox of this tenant): an exec's ownership check
        and admission in one statement, one round trip instead of two."""
        cur = await conn.execute(
            self._exec_usage_in, (sandbox_id, tenant_id, tenant_id, tenant_id, held, tenant_id, held)
        )
        return await cur.fetchone()

    async def tenant_usage(self, conn: Executor, tenant_id: str) -> dict:
        """What a tenant holds now: live sandboxes, their memory, running commands (for quotas)."""
        cur = await conn.execute(
            sql.SQL(
                "SELECT count(*) AS sandboxes, coalesce(sum(memory_mb), 0) AS memory_mb,"
                " (SELECT count(*) FROM {0}.execs WHERE tenant_id = %s AND state = 'running') AS execs,"
                " (SELECT coalesce(sum(size), 0)::bigint FROM {0}.artifacts"
                " WHERE tenant_id = %s AND deleted_at IS NULL) AS artifact_bytes"
                " FROM {0}.sandboxes WHERE tenant_id = %s AND state NOT IN ('terminated', 'failed')"
            ).format(self.schema),
            (tenant_id, tenant_id, tenant_id),
        )
        return await cur.fetchone()
