"""`astraforge replay`: reads Kafka directly; --verify compares Kafka with the projection."""

import json
import subprocess
import sys

from psycopg import sql

from astraforge.db import connect
from astraforge.producers.kafka import EventProducer
from astraforge.projections.postgres import Projector
from tests.support import chat, cli_env


def replay(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "astraforge.cli", "replay", *args],
        env=cli_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


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
        conn.execute(sql.SQL(
            "UPDATE {}.events SET payload = '{{\"text\": \"forged\"}}' WHERE stream_id = 'audit' AND \"offset\" = 7"
        ).format(schema))  # fmt: skip
    bad = replay(fresh_settings, "audit", "--verify")
    assert bad.returncode == 1
    assert "offset 3: in Kafka, missing from the projection" in bad.stdout
    assert "offset 7: payload" in bad.stdout and "forged" in bad.stdout
