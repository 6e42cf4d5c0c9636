"""File leases on real PostgreSQL, as several API or processor instances take them: each instance
here is its own connection, and they ask at the same moment."""

import secrets
import threading

from astraforge import leases
from astraforge.db import connect
from tests.support import wait_until


def test_instances_asking_at_once_get_one_holder_and_the_others_its_name(settings) -> None:
    sandbox, path = f"sb-{secrets.token_hex(6)}", "/workspace/shared.py"
    holders = [f"conversation:cv-{i}" for i in range(8)]
    conns = [connect(settings, autocommit=True) for _ in holders]
    start, outcomes = threading.Barrier(len(holders)), {}

    def ask(i: int) -> None:
        start.wait()
        outcomes[holders[i]] = leases.acquire(conns[i], "t", sandbox, path, holders[i], 30)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(holders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        winners = [h for h, o in outcomes.items() if o.granted]
        assert len(outcomes) == len(holders) and len(winners) == 1
        (winner,) = winners
        for holder, outcome in outcomes.items():
            if holder != winner:
                assert outcome.lease.holder == winner and f"leased by {winner}" in outcome.refusal()
        again = leases.acquire(conns[0], "t", sandbox, path, winner, 60)  # the holder extends its own
        assert again.granted and again.lease.expires_at > outcomes[winner].lease.expires_at
        assert again.lease.acquired_at == outcomes[winner].lease.acquired_at
        assert leases.release(conns[0], sandbox, path, "conversation:someone-else") is None
        assert [lease.holder for lease in leases.held(conns[0], "t", sandbox)] == [winner]
        assert leases.held(conns[0], "another-tenant", sandbox) == []
        assert leases.release(conns[0], sandbox, path, winner).holder == winner
        assert leases.held(conns[0], "t", sandbox) == []
    finally:
        for conn in conns:
            conn.close()


def test_a_lease_expires_and_then_goes_to_the_next_asker(settings) -> None:
    sandbox, path = f"sb-{secrets.token_hex(6)}", "/workspace/a.txt"
    with connect(settings, autocommit=True) as conn:
        assert leases.acquire(conn, "t", sandbox, path, "conversation:crashed", 0.5).granted
        refused = leases.acquire(conn, "t", sandbox, path, "conversation:next", 30)
        assert not refused.granted and refused.lease.holder == "conversation:crashed"
        wait_until(
            lambda: leases.acquire(conn, "t", sandbox, path, "conversation:next", 30).granted,
            timeout=10,
            what="the crashed holder's lease to expire",
        )
        (lease,) = leases.held(conn, "t", sandbox)
        assert lease.holder == "conversation:next"


def test_one_file_spelled_two_ways_is_one_lease(settings) -> None:
    """``/workspace/./a.txt`` and ``//workspace/a.txt`` are the file ``/workspace/a.txt``: a second
    holder asking under another spelling is refused, not handed a second lease on the same file."""
    sandbox = f"sb-{secrets.token_hex(6)}"
    with connect(settings, autocommit=True) as conn:
        first = leases.acquire(conn, "t", sandbox, "/workspace/./a.txt", "conversation:first", 30)
        assert first.granted and first.lease.path == "/workspace/a.txt"
        for spelling in ("/workspace/a.txt", "//workspace/a.txt", "/workspace/sub/../a.txt", "/workspace//a.txt"):
            refused = leases.acquire(conn, "t", sandbox, spelling, "conversation:second", 30)
            assert not refused.granted and refused.lease.holder == "conversation:first", spelling
        assert [lease.path for lease in leases.held(conn, "t", sandbox)] == ["/workspace/a.txt"]
        assert leases.release(conn, sandbox, "/workspace//a.txt", "conversation:first").holder == "conversation:first"
        assert leases.held(conn, "t", sandbox) == []
