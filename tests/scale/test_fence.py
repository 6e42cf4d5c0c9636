"""Fencing a stalled instance: a processor stopped (SIGSTOP) past its session timeout while it runs a
long command loses its partitions to another instance, which re-attaches to the command (it goes on
in the sandbox) and records the rest of it. When the stalled one wakes up, its command thread still
reads the command and its state still says "owned": its lease has lapsed and the supervisor says
another host took the command over, so it writes nothing for that sandbox and touches nothing on the
provider (and the broker would refuse a record stamped under the lapsed lease)."""

import time

import pytest

from tests.scale.cluster import Instance, command_ledger, containers, count, elapsed, records, wait_finished
from tests.scale.conftest import PARTITIONS
from tests.support import wait_until


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_stalled_instance_writes_nothing_after_the_take_over(deployment) -> None:
    s, api, provider, logs = deployment
    a = Instance(s, "proc-a", logs)
    b = None
    try:
        wait_until(lambda: a.owned() == set(range(PARTITIONS)), timeout=90, what="a owns every partition")
        sid = api.create()["id"]
        container = containers(provider)[sid]
        gated = "echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo finished"
        cid = api.exec(sid, gated, run_async=True)["command_id"]
        wait_until(
            lambda: count(records(s, sid), "exec.output", command_id=cid),
            timeout=60,
            interval=0.2,
            what="the long command running in a",
        )

        a.freeze()
        frozen = time.monotonic()
        b = Instance(s, "proc-b", logs)
        wait_until(lambda: b.owned() == set(range(PARTITIONS)), timeout=120, what="b owns every partition")
        wait_until(lambda: f"re-attaching to {cid}" in b.log.read_text(), timeout=60, what="b re-attached")
        provider.handle(sid).client.exec(argv=["touch", "/tmp/go"])
        closed = wait_finished(s, sid, cid)  # b read the command on to its end
        assert (closed.payload["exit_code"], closed.payload["error"]) == (0, None), closed.payload
        taken_over = [e.event_id for e in records(s, sid)].index(closed.event_id)
        print(f"b took over {elapsed(frozen)}s after a froze")

        a.thaw()  # a's command thread still reads the command; its state still says "owned"

        def settled() -> list[str]:  # what a's processor says became of the command
            return [x for x in a.log.read_text().splitlines() if f"command {cid} on {sid} " in x]

        def stray() -> list[str]:  # records after b's take-over (its exec.finished, then its sandbox.ready)
            return [e.type for e in records(s, sid)[taken_over + 1 :]][1:]

        wait_until(lambda: settled() or stray(), timeout=120, what=f"a settled the command's outcome: {a.log}")
        assert not stray(), f"the stalled instance wrote after the take-over: {stray()}"
        assert all(x.endswith(("taken over by another host", "(the new owner re-attaches)")) for x in settled())
        wait_until(
            lambda: a.owned() and b.owned() and a.owned() | b.owned() == set(range(PARTITIONS)),
            timeout=120,
            what="a back in the group",
        )

        probe = api.exec(sid, "echo alive")  # whoever owns it now: the sandbox and its container are intact
        assert probe["stdout"] == "alive\n", probe
        assert containers(provider).get(sid) == container, "the stalled instance acted on the provider"
        events = records(s, sid)
        probed = next(i for i, e in enumerate(events) if e.payload.get("command_id") == probe["command_id"])
        after = [e.type for e in events[taken_over + 1 : probed]]
        assert after == ["sandbox.ready"], f"records after the take-over that b did not write: {after}"
        assert dict(command_ledger(events)[cid]) == {"exec.accepted": 1, "exec.started": 1, "exec.finished": 1}
        chunks = [e.payload["data"] for e in events if e.type == "exec.output" and e.payload["command_id"] == cid]
        assert b"".join(chunks) == b"started\nfinished\n"
    finally:
        a.stop()
        if b:
            b.stop()
