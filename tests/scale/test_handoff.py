"""A rebalance never interrupts a running command, on the real runtime: processor instances in
subprocesses on one docker engine, commands printing a numbered line every 50 ms in a sandbox on every
partition. An instance joins (half the partitions move to it while the commands run), then it is
killed -9 (they move back): each command runs on throughout, and its stream holds every line exactly
once, in order, and one ``exec.finished`` with its exit code; nothing is closed as interrupted. The
commands end only when the test lets them (a file in the sandbox), after both moves."""

import time

import pytest

from astraforge.producers.kafka import EventProducer
from tests.scale.cluster import Instance, count, create_command, elapsed, records, split_evenly, wait_finished
from tests.scale.conftest import PARTITIONS
from tests.support import sandbox_ids_in, wait_until

NUMBERED = "i=0; while [ ! -e /tmp/go ]; do i=$((i+1)); echo $i; sleep 0.05; done; echo end; exit 7"
MORE = 5  # lines each command must have recorded after a move before the next step


def recorded_lines(s, sandbox_id: str, command_id: str) -> list[str]:
    chunks = [
        e.payload["data"]
        for e in records(s, sandbox_id)
        if e.type == "exec.output" and e.payload["command_id"] == command_id
    ]
    return b"".join(chunks).decode().splitlines()


def all_grew(s, commands: dict[str, str], since: dict[str, int]) -> bool:
    return all(len(recorded_lines(s, sid, cid)) >= since[sid] + MORE for sid, cid in commands.items())


def lines_now(s, commands: dict[str, str]) -> dict[str, int]:
    return {sid: len(recorded_lines(s, sid, cid)) for sid, cid in commands.items()}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_commands_run_on_through_a_join_and_a_kill_9_with_every_line_once(deployment) -> None:
    s, api, provider, logs = deployment
    a = Instance(s, "proc-a", logs)
    b = None
    try:
        wait_until(lambda: a.owned() == set(range(PARTITIONS)), timeout=90, what="a owns every partition")
        sandboxes = [sandbox_ids_in(s, {p})[0] for p in range(PARTITIONS)]  # one on every partition
        EventProducer(s).append_many([create_command(api, s.sandbox_image, sid) for sid in sandboxes])
        for sid in sandboxes:
            wait_until(lambda sid=sid: count(records(s, sid), "sandbox.ready"), timeout=90, what=f"{sid} ready")
        commands = {sid: api.exec(sid, NUMBERED, run_async=True)["command_id"] for sid in sandboxes}
        wait_until(lambda: all_grew(s, commands, dict.fromkeys(commands, 0)), timeout=60, what="every command printing")

        before = lines_now(s, commands)
        joined = time.monotonic()
        b = Instance(s, "proc-b", logs)  # joins: half the partitions move to it, their commands running
        moved = split_evenly([a, b], PARTITIONS)["proc-b"]
        print(f"b joined and took partitions {sorted(moved)} in {elapsed(joined)}s")
        wait_until(lambda: all_grew(s, commands, before), timeout=90, what="every command recorded after the join")

        before = lines_now(s, commands)
        killed = time.monotonic()
        b.kill9()  # mid-command: what b was reading goes on in the sandboxes, detached
        wait_until(lambda: a.owned() == set(range(PARTITIONS)), timeout=90, what="a owns every partition again")
        print(f"failover after kill -9: {elapsed(killed)}s")
        wait_until(lambda: all_grew(s, commands, before), timeout=90, what="every command recorded after the kill")

        for sid in sandboxes:
            provider.handle(sid).client.exec(argv=["touch", "/tmp/go"])
        for sid, cid in commands.items():
            done = wait_finished(s, sid, cid)
            assert (done.payload["exit_code"], done.payload["error"]) == (7, None), done.payload
            events = records(s, sid)
            assert count(events, "exec.finished") == 1 and count(events, "exec.started") == 1, sid
            seqs = [e.payload["seq"] for e in events if e.type == "exec.output"]
            assert seqs == list(range(len(seqs))), (sid, seqs)
            lines = recorded_lines(s, sid, cid)
            assert lines[-1] == "end" and lines[:-1] == [str(i) for i in range(1, len(lines))], (sid, lines)
        total = sum(len(recorded_lines(s, sid, cid)) for sid, cid in commands.items())
        print(f"{len(commands)} commands through a join and a kill -9: {total} lines, each once")
    finally:
        a.stop()
        if b:
            b.stop()
