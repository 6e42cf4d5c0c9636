"""Partition ownership of the sandbox processor, driven through its own rebalance hooks: a revocation
that arrives while a take-over loads leaves the partition unowned (the take-over is stale)."""

import asyncio
from collections.abc import Iterator

import pytest

from astraforge.processors.sandboxes import SandboxProcessor


@pytest.fixture
def processor(fresh_settings) -> Iterator[SandboxProcessor]:
    """A processor that is not started: the test drives its rebalance hooks itself."""
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    processor = SandboxProcessor(s, make_provider(s))
    yield processor
    processor.producer.close()


def test_a_revocation_while_a_take_over_loads_never_leaves_the_partition_owned(processor) -> None:
    load = processor._load

    def load_then_revoke(partition: int):  # the barrier: the revocation lands between the load and the marking
        loaded = load(partition)
        processor._suspend_now(frozenset({partition}))
        return loaded

    processor._load = load_then_revoke
    asyncio.run(processor._assigned(frozenset({0})))
    assert processor.status.get(0) != "owned", "a stale take-over marked a revoked partition owned"

    processor._load = load  # the rebalance ends with the partition assigned again: now it is owned
    asyncio.run(processor._assigned(frozenset({0})))
    assert processor.status == {0: "owned"}
