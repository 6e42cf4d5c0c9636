"""A driver that resumes reads the run's stream from its first record: before it asks "is this
command answered already?", it must have read everything the stream held when it started."""

from astraforge.processors.runs.facts import StreamFacts
from astraforge.processors.runs.state import RunState, lifecycle
from astraforge.producers.kafka import EventProducer


def test_find_sees_every_record_the_stream_held_when_the_driver_started(fresh_settings) -> None:
    """``find`` used to look only at what the first polls happened to fetch (often nothing yet):
    a resumed driver then sent commands again that were answered long ago, and wrote records such
    as the source's ``artifact.stored`` a second time."""
    st = RunState(run_id="run-facts", tenant_id="t", request={"repo_url": "/r.git"})
    history = [lifecycle(st, "provisioning", "test") for _ in range(1500)] + [lifecycle(st, "verifying", "test")]
    producer = EventProducer(fresh_settings)
    try:
        producer.append_many(history)
    finally:
        producer.close()
    facts = StreamFacts(fresh_settings, st.run_id, 0, lambda: False)
    try:
        found = facts.find(lambda e: e.type == "run.verifying")
        assert found is not None and found.event_id == history[-1].event_id
        assert len(facts.seen) == len(history)
    finally:
        facts.close()
