"""A driver that resumes reads the run's stream from its first record: before it asks "is this
command answered already?", it must have read everything the stream held when it started."""

from astraforge.processors.runs.facts import Answer, StreamFacts
from astraforge.processors.runs.state import RunState, event, lifecycle
from astraforge.producers.kafka import EventProducer


def written_then_read(settings, run_id: str, history: list) -> StreamFacts:
    """``history`` appended to the run's stream, and a ``StreamFacts`` reading it from the start."""
    producer = EventProducer(settings)
    try:
        producer.append_many(history)
    finally:
        producer.close()
    return StreamFacts(settings, run_id, 0, lambda: False)


def test_find_sees_every_record_the_stream_held_when_the_driver_started(fresh_settings) -> None:
    """``find`` used to look only at what the first polls happened to fetch (often nothing yet):
    a resumed driver then sent commands again that were answered long ago, and wrote records such
    as the source's ``artifact.stored`` a second time."""
    st = RunState(run_id="run-facts", tenant_id="t", request={"repo_url": "/r.git"})
    history = [lifecycle(st, "provisioning", "test") for _ in range(1500)] + [lifecycle(st, "verifying", "test")]
    facts = written_then_read(fresh_settings, st.run_id, history)
    try:
        found = facts.find(lambda e: e.type == "run.verifying")
        assert found is not None and found.event_id == history[-1].event_id
        assert len(facts.seen) == len(history)
    finally:
        facts.close()


def test_lookups_by_answer_use_the_index_not_a_scan_of_everything_read(fresh_settings) -> None:
    """A driver asks "is this command answered?" once or twice per step; each lookup used to scan every
    record read so far, so a Codex run of n steps cost O(n^2). Through the index each lookup looks at
    a bounded number of records (counted by ``examined``), however long the stream."""
    st = RunState(run_id="run-index", tenant_id="t", request={"repo_url": "/r.git"})
    n = 1000
    history = [
        event(st, "exec.finished", {"command_id": f"c{i}", "exit_code": 0, "duration_ms": 1}, "test") for i in range(n)
    ]
    facts = written_then_read(fresh_settings, st.run_id, history)
    try:
        for i in range(n):  # the pattern of a resumed driver: find, then wait, per command
            found = facts.find(Answer(("exec.finished",), "command_id", f"c{i}"))
            waited = facts.wait(Answer(("exec.finished", "exec.output"), "command_id", f"c{i}"), 5)
            assert found is not None and found.event_id == waited.event_id == history[i].event_id
        assert facts.find(Answer(("exec.finished",), "command_id", "never")) is None
        assert facts.examined <= 3 * n  # a scan per lookup examines ~n^2 = 1,000,000
    finally:
        facts.close()
