"""``/v1/runs?text=`` on a tenant with many runs: trigram indexes answer it (EXPLAIN on real
PostgreSQL with 10,000 runs), and the text is matched literally (``%`` and ``_`` are no wildcards)."""

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from astraforge.db import connect
from astraforge.projections.postgres import create_schema, drop_schema
from astraforge.projections.queries import ProjectionQueries


class Explained:
    """Runs the statement a query method builds under EXPLAIN: the plan PostgreSQL chose for it."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn
        self.plans: list[Any] = []

    async def execute(self, query: Any, params: Any = None) -> Any:
        cur = await self.conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params)
        self.plans.append((await cur.fetchone())["QUERY PLAN"])
        return cur


def _index_names(plan: Any) -> set[str]:
    text = json.dumps(plan)
    return {name for name in ("runs_title_trgm", "runs_spec_trgm", "runs_by_tenant", "runs_pkey") if name in text}


def test_text_search_uses_the_trigram_indexes_and_matches_literally(fresh_settings) -> None:
    schema = fresh_settings.projection_schema
    now = datetime.now(UTC)
    rows = [
        (f"run-{i:05d}", "t1", "failed", 1, f"Fix bug {i}", "script", f"request number {i} of the backlog", now, now, i)
        for i in range(10_000)
    ]
    rows += [
        ("run-x1", "t1", "failed", 1, "100% cpu", "script", "the worker_pool spins", now, now, 1),
        ("run-x2", "t1", "failed", 1, "1000 cpu", "script", "the workerXpool spins", now, now, 1),
        ("run-x3", "t2", "failed", 1, "100% cpu", "script", "another tenant", now, now, 1),
    ]
    with connect(fresh_settings, autocommit=True) as conn:
        create_schema(conn, schema)
        with conn.cursor().copy(
            sql.SQL(
                "COPY {}.runs (run_id, tenant_id, state, attempt, title, agent, spec, created_at, updated_at,"
                " last_offset) FROM STDIN"
            ).format(sql.Identifier(schema))
        ) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(sql.SQL("ANALYZE {}.runs").format(sql.Identifier(schema)))

    async def search() -> tuple[list[str], list[str], set[str]]:
        queries = ProjectionQueries(schema)
        async with await psycopg.AsyncConnection.connect(
            fresh_settings.database_dsn(), row_factory=psycopg.rows.dict_row
        ) as conn:
            percent = [r["run_id"] for r in await queries.runs(conn, "t1", "", 50, text="100% CPU")]
            underscore = [r["run_id"] for r in await queries.runs(conn, "t1", "", 50, text="worker_pool")]
            explained = Explained(conn)
            await queries.runs(explained, "t1", "", 50, text="number 9999 ")
        return percent, underscore, _index_names(explained.plans)

    try:
        percent, underscore, used = asyncio.run(search())
    finally:
        with connect(fresh_settings, autocommit=True) as conn:
            drop_schema(conn, schema)
    assert percent == ["run-x1"]  # not "1000 cpu" (a wildcard), not the other tenant's
    assert underscore == ["run-x1"]  # not "workerXpool"
    assert {"runs_title_trgm", "runs_spec_trgm"} <= used, used  # a bitmap OR of both, no scan of 10k rows
