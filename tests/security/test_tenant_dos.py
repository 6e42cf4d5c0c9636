"""One tenant cannot starve another of the API: 100 open SSE streams of tenant A (each used to
hold a pooled PostgreSQL connection for its whole life, pool of 20) while tenant B's REST calls
keep answering. B's calls get a 10 s client timeout: a starved call waits out the pool (30 s)."""

import asyncio

import httpx

from tests.support import auth, chat, wait_until

SSE_CLIENTS = 100


def test_many_sse_streams_of_one_tenant_do_not_starve_another(api_url, producer, tenant, other_tenant) -> None:
    a, key_a = tenant
    _, key_b = other_tenant
    stream = f"dos-{a}"
    producer.append_many([chat(stream, a, "hello")])
    events = f"{api_url}/v1/streams/{stream}/events"
    wait_until(lambda: httpx.get(events, headers=auth(key_a)).status_code == 200, timeout=30, what="projection")
    asyncio.run(_scenario(api_url, stream, key_a, key_b))


async def _scenario(api_url: str, stream: str, key_a: str, key_b: str) -> None:
    limits = httpx.Limits(max_connections=SSE_CLIENTS + 10, max_keepalive_connections=SSE_CLIENTS + 10)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=60) as client:
        opened = 0

        async def hold_open() -> None:
            nonlocal opened
            async with client.stream("GET", f"/v1/streams/{stream}/events/sse", headers=auth(key_a)) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():  # the replayed record, then pings, until cancelled
                    if line.startswith("data:"):
                        opened += 1

        holders = [asyncio.create_task(hold_open()) for _ in range(SSE_CLIENTS)]
        async with asyncio.timeout(60):
            while opened < SSE_CLIENTS:
                await asyncio.sleep(0.05)
        try:
            async with httpx.AsyncClient(base_url=api_url, timeout=10) as other:
                for _ in range(30):
                    r = await other.get("/v1/sandboxes", headers=auth(key_b))
                    assert r.status_code == 200, r.text
                    r = await other.get("/v1/streams", headers=auth(key_b))
                    assert r.status_code == 200, r.text
        finally:
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
