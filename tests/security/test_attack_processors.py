"""Attacks on the processors (issue 7), made end to end through the public API with the sandbox
processor running: as a tenant choosing a sandbox's limits, as code inside a sandbox, as a second
tenant. Each test failed on main before its fix."""

import httpx
import pytest

from tests.support import auth


# -- a limit that rounds to "no limit" -----------------------------------------------------------
@pytest.mark.parametrize("cpus", [1e-300, 1e-10, 0.0001, 0.009])
def test_a_cpu_limit_too_small_for_the_engine_is_refused(api_url, sandbox_processor, tenant, docker_provider,
                                                         cpus) -> None:  # fmt: skip
    """Docker takes the limit in nano-CPUs and a CFS quota of at least 1 ms per 100 ms period:
    ``cpus: 1e-300`` became ``NanoCpus=0``, which docker reads as *no* limit (a ready sandbox with
    every host core); ``cpus: 0.0001`` passed the API and failed at provision with the engine's
    message (the cgroup path and the container id) as the tenant-visible reason."""
    _, key = tenant
    r = httpx.post(f"{api_url}/v1/sandboxes", headers=auth(key), json={"profile": {"cpus": cpus}}, timeout=120)
    if r.status_code == 201:  # accepted anyway: the sandbox must then hold a real CPU limit
        sandbox_id = r.json()["id"]
        found = docker_provider.client.containers.list(
            all=True, filters={"label": f"astraforge.sandbox_id={sandbox_id}"}
        )
        nano = [c.attrs["HostConfig"]["NanoCpus"] for c in found]
        pytest.fail(f"cpus={cpus} accepted: state {r.json()['state']!r}, reason {r.json()['reason']!r}, "
                    f"NanoCpus {nano}")  # fmt: skip
    assert r.status_code == 422, r.text
    assert "cpus" in r.json()["error"]["message"]
