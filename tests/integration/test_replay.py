"""`astraforge replay`: reads Kafka directly; --verify compares Kafka with the projection."""

import json
import subprocess
import sys

from psycopg import sql

from astraforge.db import connect
from astraforge.producers.kafka import EventProducer
from astraforge.projections.postgres import Projector
from astraforge.schemas import Envelope
from tests.support import chat, cli_env


def replay(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "astraforge.cli", "replay", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_replay_prints_the_timeline_and_verify_finds_differences(fresh_settings) -> None:
    producer = EventProducer(fresh_settings)
    producer.append_many([chat("audit", "acme", f"step {n}") for n in range(20)])
    producer.append(chat("other", "acme", "not this stream"))
    Projector(fresh_settings).run_until_caught_up()

    text = replay(fresh_settings, "audit")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert len(lines) == 20 and "chat.message" in lines[0] and "step 0" in lines[0]

    jsonl = replay(fresh_settings, "audit", "--format", "jsonl", "--from", "15")
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["payload"]["text"] for r in records] == [f"step {n}" for n in range(15, 20)]
    assert all(r["stream_id"] == "audit" for r in records)

    ok = replay(fresh_settings, "audit", "--verify")
    assert ok.returncode == 0 and "0 difference" in ok.stderr

    with connect(fresh_settings) as conn:
        schema = sql.Identifier(fresh_settings.projection_schema)
        conn.execute(sql.SQL("DELETE FROM {}.events WHERE stream_id = 'audit' AND \"offset\" = 3").format(schema))
        conn.execute(
            sql.SQL(
                'UPDATE {}.events SET payload = \'{{"text": "forged"}}\' WHERE stream_id = \'audit\' AND "offset" = 7'
            ).format(schema)
        )
    bad = replay(fresh_settings, "audit", "--verify")
    assert bad.returncode == 1
    assert "offset 3: in Kafka, missing from the projection" in bad.stdout
    assert "offset 7: payload" in bad.stdout and "forged" in bad.stdout


def test_verify_is_bounded_by_the_projection_and_checks_what_it_claims(fresh_settings) -> None:
    """Lag is not a difference; tenant, schema version and the read models are compared."""
    producer = EventProducer(fresh_settings)
    sandbox = [
        Envelope(
            type=f"sandbox.{s}",
            stream_id="checked",
            tenant_id="acme",
            actor="processor",
            sandbox_id="sb-checked",
            payload={"state": s},
        )
        for s in ("requested", "ready")
    ]
    producer.append_many([*sandbox, chat("checked", "acme", "hi"), chat("checked", "acme", "bytes")])
    Projector(fresh_settings).run_until_caught_up()
    producer.append(chat("checked", "acme", "not projected yet"))  # the projector is not running: lag
    ok = replay(fresh_settings, "checked", "--verify")
    assert ok.returncode == 0 and "0 difference" in ok.stderr, ok.stdout + ok.stderr

    damage = [
        """UPDATE {}.events SET tenant_id = 'evil' WHERE "offset" = 2 AND stream_id = 'checked'""",
        """UPDATE {}.events SET schema_version = 0 WHERE "offset" = 3 AND stream_id = 'checked'""",
        "UPDATE {}.sandboxes SET state = 'terminated' WHERE sandbox_id = 'sb-checked'",
        "UPDATE {}.streams SET event_count = 99 WHERE stream_id = 'checked'",
    ]
    with connect(fresh_settings) as conn:
        for statement in damage:
            conn.execute(sql.SQL(statement).format(sql.Identifier(fresh_settings.projection_schema)))
    bad = replay(fresh_settings, "checked", "--verify")
    assert bad.returncode == 1
    for expected in ("offset 2: tenant_id", "offset 3: schema_version", "sandboxes.sb-checked", "streams.event_count"):
        assert expected in bad.stdout, (expected, bad.stdout)
