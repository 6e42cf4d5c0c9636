"""Webhook intake latency: a signed Sentry delivery until its 202 (verify, parse, append one record
and wait for Kafka's acknowledgement), next to the raw floor, appending the same record with the
raw producer, in one run. Sentry counts a reply after 1 s as a timeout.

usage: python bench/webhooks.py [--deliveries N]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astraforge.integrations import Integration
from astraforge.keys import create_key
from astraforge.producers import webhooks
from astraforge.producers.alert_payloads import sentry
from astraforge.producers.kafka import EventProducer
from bench.common import bench_settings, drop, pct, table
from tests.alert_payloads import body_bytes, event_alert, sentry_headers
from tests.support import auth, free_port, wait_until

SECRET = "bench-client-secret-0123456789abcdef"


def ms(samples: list[float]) -> tuple[str, str]:
    return f"{pct(samples, 50) * 1000:.1f}", f"{pct(samples, 99) * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=300)
    n = parser.parse_args().deliveries
    settings = bench_settings()
    env = {**os.environ, **settings.as_env(), "ASTRAFORGE_REPO_ALLOWLIST": json.dumps({"*": ["/srv/bench/*"]})}
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "astraforge.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    producer = EventProducer(settings)
    try:
        key = create_key(settings, "bench")
        wait_until(lambda: _up(url), timeout=60, what="API")
        http = httpx.Client(base_url=url, timeout=30)
        made = http.post(
            "/v1/integrations",
            headers=auth(key),
            json={
                "kind": "sentry",
                "client_secret": SECRET,
                "projects": {"calc-service": {"repository": "/srv/bench/a.git"}},
                "steps": [{"run": "true"}],
            },
        )
        made.raise_for_status()
        path = made.json()["webhook_path"]
        bodies = [body_bytes(event_alert(str(i))) for i in range(n)]
        http.post(path, content=bodies[0], headers=sentry_headers(SECRET, bodies[0], "event_alert"))  # warm-up
        ours = []
        for body in bodies:
            headers = sentry_headers(SECRET, body, "event_alert")
            t = time.perf_counter()
            r = http.post(path, content=body, headers=headers)
            ours.append(time.perf_counter() - t)
            assert r.status_code == 202, r.text
        integration = Integration("int-bench", "bench", "sentry", None, None, None, {}, "script", [], None, [], 1, 1)
        raw = []
        for body in bodies:
            records = webhooks.receive(integration, [sentry("event_alert", json.loads(body), None)])
            t = time.perf_counter()
            producer.append_many(records)
            raw.append(time.perf_counter() - t)
        rows = [("measure", "p50 ms", "p99 ms", "vs raw p50")]
        rows.append(("raw producer: append the alert.receive record, acked", *ms(raw), "1.00"))
        rows.append(("POST /v1/webhooks/sentry (signed) until 202", *ms(ours), f"{pct(ours, 50) / pct(raw, 50):.2f}"))
        print(f"webhook intake, {n} sequential deliveries of {len(bodies[0])} bytes (Sentry's budget: 1000 ms)")
        print(table(rows))
    finally:
        producer.close()
        api.terminate()
        api.wait(timeout=30)
        drop(settings)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
