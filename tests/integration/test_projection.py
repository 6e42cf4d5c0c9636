"""Projection into PostgreSQL: read models, dead letters, rebuild, and crash safety (kill -9)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from psycopg import sql

from astraforge.db import connect
from astraforge.kafka import partition_for, read_range
from astraforge.producers.kafka import EventProducer
from astraforge.projections.postgres import Projector
from astraforge.projections.rebuild import compare, rebuild
from astraforge.sandbox.profile import SecurityProfile
from astraforge.schemas import Envelope
from tests.support import chat, cli_env, wait_until


def rows(settings, query: str, *args) -> list[dict]:
    with connect(settings) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(settings.projection_schema)), args).fetchall()


def run_lifecycle(run: str, tenant: str = "acme") -> list[Envelope]:
    ref = {
        "artifact_id": f"{run}-patch",
        "key": f"{run}/patch.diff",
        "sha256": "ab",
        "size": 10,
        "content_type": "text/x-diff",
        "name": "patch.diff",
    }
    return [
        Envelope(
            type="run.requested",
            stream_id=run,
            tenant_id=tenant,
            actor="user:1",
            payload={"state": "requested", "attempt": 1, "title": "Fix the bug", "agent": "codex"},
        ),
        Envelope(
            type="sandbox.ready",
            stream_id=run,
            tenant_id=tenant,
            actor="processor",
            sandbox_id=f"{run}-sb",
            payload={"state": "ready", "provider": "docker", "image": "bookworm"},
        ),
        Envelope(
            type="run.running",
            stream_id=run,
            tenant_id=tenant,
            actor="processor",
            payload={"state": "running", "attempt": 1},
        ),
        Envelope(type="artifact.stored", stream_id=run, tenant_id=tenant, actor="processor", payload={"artifact": ref}),
        Envelope(
            type="sandbox.terminated",
            stream_id=run,
            tenant_id=tenant,
            actor="processor",
            sandbox_id=f"{run}-sb",
            payload={"state": "terminated", "reason": "stop"},
        ),
        Envelope(
            type="run.awaiting_review",
            stream_id=run,
            tenant_id=tenant,
            actor="processor",
            payload={"state": "awaiting_review", "attempt": 1},
        ),
    ]


def test_records_fold_into_events_streams_runs_sandboxes_artifacts(fresh_settings) -> None:
    producer = EventProducer(fresh_settings)
    producer.append_many([*run_lifecycle("run-a"), chat("run-a", "acme", "hello")])
    projector = Projector(fresh_settings)
    projector.run_until_caught_up()
    (run,) = rows(fresh_settings, "SELECT * FROM {s}.runs")
    assert (run["run_id"], run["state"], run["title"], run["agent"]) == (
        "run-a",
        "awaiting_review",
        "Fix the bug",
        "codex",
    )
    assert run["last_offset"] == 5
    (sandbox,) = rows(fresh_settings, "SELECT * FROM {s}.sandboxes")
    assert (sandbox["state"], sandbox["provider"], sandbox["reason"]) == ("terminated", "docker", "stop")
    (artifact,) = rows(fresh_settings, "SELECT * FROM {s}.artifacts")
    assert artifact["key"] == "run-a/patch.diff" and artifact["offset"] == 3
    (stream,) = rows(fresh_settings, "SELECT * FROM {s}.streams")
    assert (stream["event_count"], stream["first_offset"], stream["last_offset"]) == (7, 0, 6)
    events = rows(fresh_settings, 'SELECT type, payload FROM {s}.events ORDER BY "offset"')
    assert [e["type"] for e in events][-1] == "chat.message" and events[-1]["payload"]["text"] == "hello"


def test_upserts_of_every_shape_apply_in_order_within_one_batch(fresh_settings) -> None:
    """Upserts go in a pipeline with statements cached by shape: inserts, updates of existing rows
    (only the owner's), DO NOTHING and DO UPDATE of one key, all in record order."""
    producer = EventProducer(fresh_settings)
    sandbox = {"type": "sandbox.requested", "stream_id": "sb-1", "sandbox_id": "sb-1", "actor": "api"}
    execs = [
        Envelope(type=t, stream_id="sb-1", tenant_id="acme", actor="p", sandbox_id="sb-1", payload=p)
        for t, p in [
            ("exec.started", {"command_id": "c1"}),
            ("exec.finished", {"command_id": "c1", "exit_code": 3, "duration_ms": 1.0}),
            ("exec.started", {"command_id": "c2"}),
        ]
    ]
    producer.append_many(
        [
            Envelope(
                **sandbox, tenant_id="acme", payload={"state": "requested", "details": {"profile.memory_mb": "256"}}
            ),
            Envelope(**{**sandbox, "type": "sandbox.ready"}, tenant_id="acme", payload={"state": "ready"}),
            *execs,
            *run_lifecycle("run-b"),
            Envelope(
                type="artifact.deleted",
                stream_id="run-b",
                tenant_id="intruder",
                actor="x",
                payload={"artifact_id": "run-b-patch", "reason": "deleted"},
            ),
            Envelope(
                type="artifact.deleted",
                stream_id="run-c",
                tenant_id="acme",
                actor="x",
                payload={"artifact_id": "run-c-never-stored", "reason": "deleted"},
            ),
        ]
    )
    projector = Projector(fresh_settings)
    projector.run_until_caught_up()
    (sb,) = rows(fresh_settings, "SELECT * FROM {s}.sandboxes WHERE sandbox_id = %s", "sb-1")
    assert (sb["state"], sb["memory_mb"]) == ("ready", SecurityProfile.with_overrides({"memory_mb": "256"}).ram_mb)
    states = rows(fresh_settings, "SELECT command_id, state, exit_code FROM {s}.execs ORDER BY command_id")
    assert [tuple(r.values()) for r in states] == [("c1", "finished", 3), ("c2", "running", None)]
    (artifact,) = rows(fresh_settings, "SELECT * FROM {s}.artifacts")
    assert artifact["deleted_at"] is None  # another tenant's delete never touches it
    producer.append(
        Envelope(
            type="artifact.deleted",
            stream_id="run-b",
            tenant_id="acme",
            actor="x",
            payload={"artifact_id": "run-b-patch", "reason": "deleted"},
        )
    )
    Projector(fresh_settings).run_until_caught_up()
    (artifact,) = rows(fresh_settings, "SELECT * FROM {s}.artifacts")
    assert artifact["deleted_at"] is not None


def test_a_malformed_record_is_dead_lettered_and_the_projector_continues(fresh_settings) -> None:
    producer = EventProducer(fresh_settings)
    producer.append(chat("dlq", "acme", "before"))
    producer.send_raw(fresh_settings.events_topic, b"dlq", b'{"not": "avro"}')
    producer.flush()
    producer.append(chat("dlq", "acme", "after"))
    projector = Projector(fresh_settings)
    projector.run_until_caught_up()
    assert projector.dead_lettered == 1
    texts = [r["payload"]["text"] for r in rows(fresh_settings, 'SELECT payload FROM {s}.events ORDER BY "offset"')]
    assert texts == ["before", "after"]
    partition = partition_for("dlq", fresh_settings.topic_partitions)
    (dead,) = [
        m
        for p in range(fresh_settings.topic_partitions)
        for m in read_range(fresh_settings, fresh_settings.deadletter_topic, p, 0, None)
    ]
    headers = dict(dead.headers())
    assert b"C3 01 marker" in headers["reason"]
    assert headers["source.offset"] == b"1" and int(headers["source.partition"]) == partition
    assert dead.value() == b'{"not": "avro"}' and dead.key() == b"dlq"


def test_rebuild_from_offset_zero_reproduces_the_live_tables(fresh_settings) -> None:
    producer = EventProducer(fresh_settings)
    for i in range(5):
        producer.append_many(run_lifecycle(f"run-{i}") + [chat(f"run-{i}", "acme", str(n)) for n in range(200)])
    producer.send_raw(fresh_settings.events_topic, b"x", b"garbage")
    producer.flush()
    live = Projector(fresh_settings, batch_size=97)  # different batching than the rebuild: same result
    live.run_until_caught_up()
    rebuilt = f"{fresh_settings.projection_schema}_rebuild"
    rebuild(fresh_settings, rebuilt)
    diffs = compare(fresh_settings, fresh_settings.projection_schema, rebuilt)
    assert diffs and all(d == (0, 0) for d in diffs.values()), diffs
    assert rows(fresh_settings, "SELECT count(*) AS n FROM {s}.events")[0]["n"] == 5 * 206
    # and the comparison can fail: damage one live row
    with connect(fresh_settings) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.runs SET state = 'failed' WHERE run_id = 'run-3'").format(
                sql.Identifier(fresh_settings.projection_schema)
            )
        )
    assert compare(fresh_settings, fresh_settings.projection_schema, rebuilt)["runs"] == (1, 1)


def test_kill_9_mid_batch_loses_and_duplicates_nothing(fresh_settings, tmp_path) -> None:
    total = 60_000
    producer = EventProducer(fresh_settings)
    for n in range(total):
        producer.send(chat(f"crash-{n % 50}", "acme", str(n)))
    producer.flush()
    count = "SELECT count(*) AS n FROM {s}.events"
    first = _projector_process(fresh_settings, tmp_path / "first.log")
    try:
        wait_until(lambda: _safe_count(fresh_settings, count) > 0, timeout=60, interval=0.01, what="first batch")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    at_kill = _safe_count(fresh_settings, count)
    assert 0 < at_kill < total, "the projector must be killed part-way"
    second = _projector_process(fresh_settings, tmp_path / "second.log")
    try:
        _wait_while_running(second, lambda: _safe_count(fresh_settings, count) >= total, tmp_path, fresh_settings)
    finally:
        second.terminate()
        second.wait(timeout=30)
    stats = rows(
        fresh_settings,
        'SELECT count(*) AS n, count(DISTINCT (partition, "offset")) AS d,'
        " count(DISTINCT event_id) AS e FROM {s}.events",
    )[0]
    assert stats == {"n": total, "d": total, "e": total}
    counted = rows(fresh_settings, "SELECT sum(event_count) AS n FROM {s}.streams")[0]["n"]
    assert counted == total  # stream counters were not double-applied either


def _projector_process(settings, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "astraforge.cli", "projections", "run"]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=cli_env(settings), stdout=out, stderr=subprocess.STDOUT)


def _wait_while_running(process: subprocess.Popen, done, logs: Path, settings) -> None:
    """Wait for ``done``; a projector that exits or stalls fails the test with its output and the
    database's sessions (what it waits for), not a bare timeout."""
    deadline = time.monotonic() + 300  # correctness, not speed: a loaded CI machine is slow
    while not done():
        if process.poll() is not None or time.monotonic() > deadline:
            with connect(settings) as conn:
                sessions = conn.execute(
                    "SELECT pid, state, wait_event_type, wait_event, left(query, 120) AS query"
                    " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            output = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
            raise AssertionError(f"projector exit={process.poll()} never caught up\n{output}\nsessions: {sessions}")
        time.sleep(0.05)


def _safe_count(settings, query: str) -> int:
    try:
        return rows(settings, query)[0]["n"]
    except Exception:  # the schema may not exist until the projector has started
        return 0


def test_records_postgres_refuses_are_dead_lettered_one_by_one(fresh_settings) -> None:
    """A record that decodes but cannot be written used to crash-loop the projector for everyone."""
    producer = EventProducer(fresh_settings)
    in_ns = chat("poison", "acme", "occurred_at in ns", occurred_at=1_700_000_000_000_000_000)
    too_big = Envelope(
        type="run.requested",
        stream_id="poison",
        tenant_id="acme",
        actor="user:1",
        payload={"state": "requested", "attempt": 2**40, "title": "int4 overflow", "agent": "codex"},
    )
    producer.append_many([chat("poison", "acme", "before"), in_ns, too_big, chat("poison", "acme", "after")])
    projector = Projector(fresh_settings)
    projector.run_until_caught_up()
    assert projector.dead_lettered == 2
    texts = [r["payload"].get("text") for r in rows(fresh_settings, 'SELECT payload FROM {s}.events ORDER BY "offset"')]
    assert texts == ["before", "after"]
    reasons = [
        dict(m.headers())["reason"]
        for p in range(fresh_settings.topic_partitions)
        for m in read_range(fresh_settings, fresh_settings.deadletter_topic, p, 0, None)
    ]
    assert any(b"year" in r for r in reasons) and any(b"cannot be projected" in r for r in reasons), reasons
    assert rows(fresh_settings, "SELECT * FROM {s}.runs") == []


def newer_codec(tmp_path):
    """A codec whose ChatMessage has one more field: its records carry a fingerprint older readers lack."""
    from astraforge.schemas import Codec, SchemaRegistry
    from astraforge.schemas.registry import AVRO_DIR, HISTORY_DIR

    for path in AVRO_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    chat_schema = tmp_path / "astraforge.ChatMessage.avsc"
    chat_schema.write_text(
        chat_schema.read_text().replace(
            '"fields": [', '"fields": [{"name": "mood", "type": "string", "default": "calm"},', 1
        )
    )
    history = tmp_path / "history"
    history.mkdir()
    for path in HISTORY_DIR.glob("*.avsc"):
        (history / path.name).write_text(path.read_text())
    codec = Codec(SchemaRegistry.load(tmp_path, history))
    codec.registry.release(history)
    return Codec(SchemaRegistry.load(tmp_path, history))


def test_a_newer_schema_parks_its_partition_until_an_upgraded_projector_resumes(fresh_settings, tmp_path) -> None:
    import httpx

    from tests.support import running_api

    newer = newer_codec(tmp_path)
    old = EventProducer(fresh_settings)
    upgraded = EventProducer(fresh_settings, newer)
    partitions = fresh_settings.topic_partitions
    other = next(
        f"other-{i}"
        for i in range(100)
        if partition_for(f"other-{i}", partitions) != partition_for("parked", partitions)
    )
    old.append(chat("parked", "acme", "before"))
    upgraded.append(chat("parked", "acme", "from the future"))
    old.append_many([chat("parked", "acme", "after"), chat(other, "acme", "elsewhere")])

    projector = Projector(fresh_settings)
    projector.run_until_caught_up()
    texts = {r["payload"]["text"] for r in rows(fresh_settings, "SELECT payload FROM {s}.events")}
    assert texts == {"before", "elsewhere"}, "the parked partition stops; the others go on"
    assert projector.dead_lettered == 0 and list(projector.parked) == [partition_for("parked", partitions)]
    (parked,) = rows(fresh_settings, "SELECT * FROM {s}.parked")
    assert parked["offset"] == 1 and "newer release" in parked["reason"]
    with running_api(fresh_settings) as url:
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and "parked" in health.json()["projection"]["detail"]

    Projector(fresh_settings, codec=newer).run_until_caught_up()  # the upgrade resumes where it parked
    texts = [r["payload"]["text"] for r in rows(fresh_settings, 'SELECT payload FROM {s}.events ORDER BY "offset"')]
    assert sorted(texts) == sorted(["before", "from the future", "after", "elsewhere"])
    assert rows(fresh_settings, "SELECT * FROM {s}.parked") == []


def test_swap_refuses_while_a_projector_writes_the_live_schema(fresh_settings) -> None:
    import pytest

    from astraforge.projections.postgres import ProjectorRunning
    from astraforge.projections.rebuild import swap
    from tests.support import running_projector

    EventProducer(fresh_settings).append(chat("swap", "acme", "x"))
    rebuilt = f"{fresh_settings.projection_schema}_rebuild"
    rebuild(fresh_settings, rebuilt)
    with running_projector(fresh_settings), pytest.raises(ProjectorRunning):
        wait_until(lambda: rows(fresh_settings, "SELECT * FROM {s}.events"), timeout=30)
        swap(fresh_settings, rebuilt, f"{fresh_settings.projection_schema}_retired")


def test_a_failed_row_write_never_moves_the_offset(fresh_settings) -> None:
    """Rows and offsets commit together: when PostgreSQL fails the row write (a real trigger raising,
    as a full disk or a lost connection would), nothing of the batch counts as projected, and a
    restarted projector writes all of it. (Offsets committed in a transaction of their own before
    the rows lose the whole batch here.)"""
    import pytest

    producer = EventProducer(fresh_settings)
    producer.append_many([chat("fail", "acme", str(n)) for n in range(500)])
    Projector(fresh_settings).close()  # creates the schema
    schema = sql.Identifier(fresh_settings.projection_schema)
    with connect(fresh_settings, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}.refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$"
            ).format(schema)
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER refuse BEFORE INSERT ON {}.streams FOR EACH ROW EXECUTE FUNCTION {}.refuse()"
            ).format(schema, schema)
        )
    with pytest.raises(Exception, match="disk full"):
        Projector(fresh_settings).run_until_caught_up()
    assert rows(fresh_settings, "SELECT * FROM {s}.consumer_offsets") == []
    with connect(fresh_settings, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TRIGGER refuse ON {}.streams").format(schema))
    Projector(fresh_settings).run_until_caught_up()
    assert rows(fresh_settings, "SELECT count(*) AS n FROM {s}.events")[0]["n"] == 500


def test_starting_a_process_never_queues_behind_readers(fresh_settings) -> None:
    """Every process runs the schema file at start. An ALTER TABLE there (even ``IF NOT EXISTS``)
    takes an exclusive lock: it waited for any open read, and every later read queued behind it."""
    from astraforge.projections.postgres import create_schema

    with connect(fresh_settings, autocommit=True) as conn:
        create_schema(conn, fresh_settings.projection_schema)
    with connect(fresh_settings) as reader:  # a read in an open transaction, as a slow SSE page holds
        for table in ("sandboxes", "artifacts"):
            reader.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(fresh_settings.projection_schema), sql.Identifier(table)
                )
            )
        with connect(fresh_settings, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")
            create_schema(conn, fresh_settings.projection_schema)  # LockNotAvailable if it queued


def test_event_times_are_stored_exactly_from_either_decode_path(fresh_settings) -> None:
    """The events row's occurred_at goes to binary COPY as µs since 2000-01-01 (int8): both the
    path straight from bytes (chat) and the full decode (a folded run record) store the exact
    instant, to the µs, at the ends of the range the API can read back and across the 2000 epoch."""
    from astraforge.ids import from_micros

    times = [
        -62_135_596_800_000_000,
        946_684_799_999_999,
        946_684_800_000_000,
        1_796_000_000_123_457,
        253_402_300_799_999_999,
    ]
    records = [chat("times", "acme", str(t), occurred_at=t) for t in times]
    records += [
        Envelope(
            type="run.requested",
            stream_id="times",
            tenant_id="acme",
            actor="u",
            occurred_at=t,
            payload={"state": "requested", "attempt": 1},
        )
        for t in times
    ]
    EventProducer(fresh_settings).append_many(records)
    Projector(fresh_settings).run_until_caught_up()
    stored = rows(fresh_settings, 'SELECT occurred_at FROM {s}.events WHERE stream_id = %s ORDER BY "offset"', "times")
    assert [r["occurred_at"] for r in stored] == [from_micros(t) for t in times] * 2


def test_a_double_json_cannot_hold_is_projected_as_null_as_the_live_tail_shows_it(fresh_settings) -> None:
    """NaN or infinity in a payload (a buggy producer): the live SSE frame shows null; the projection
    wrote json's ``NaN``, which jsonb refuses, so the record was dead-lettered and gone on reconnect."""
    producer = EventProducer(fresh_settings)
    base = {"command_id": "c", "exit_code": 0, "timed_out": False, "cancelled": False, "truncated": False}
    odd = [
        Envelope(
            type="exec.finished",
            stream_id="odd-doubles",
            tenant_id="acme",
            actor="processor",
            payload={**base, "duration_ms": value, "error": None},
        )
        for value in (float("nan"), float("inf"), float("-inf"), 2.5)
    ]
    try:
        producer.append_many(odd)
    finally:
        producer.close()
    projector = Projector(fresh_settings)
    try:
        projector.run_until_caught_up()
    finally:
        projector.close()
    assert projector.dead_lettered == 0
    query = 'SELECT payload FROM {s}.events WHERE stream_id = %s ORDER BY "offset"'
    assert [r["payload"]["duration_ms"] for r in rows(fresh_settings, query, "odd-doubles")] == [None, None, None, 2.5]
