"""schemathesis over the live OpenAPI schema: no input, valid or not, may produce a 5xx.

(schemathesis' own pytest plugin does not load under pytest 9, so the operations are driven with
hypothesis directly; the cases and the check are schemathesis'.)

Deterministic in CI, exploring locally: with ``CI`` set (``.ci/run`` sets it) each operation's
examples come from a seed derived from the operation, and the failures found before
(``tests/fuzz-examples/``, hypothesis' example database, committed) are replayed read-only first.
Locally every run explores new inputs and adds what fails to that database: commit it with the fix.
"""

import os
import zlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase
from schemathesis.checks import not_a_server_error

from astraforge.config import PROJECT_ROOT
from tests.integration.test_sandbox_api import post
from tests.support import auth

IN_CI = bool(os.environ.get("CI"))
FOUND = DirectoryBasedExampleDatabase(PROJECT_ROOT / "tests" / "fuzz-examples")


# The sandbox processor runs in this process: its Kafka client (aiokafka, on its own thread) shuffles
# with the global ``random`` while hypothesis draws, which hypothesis cannot tell from a strategy doing it.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_no_request_produces_a_server_error(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    # The SSE operation streams forever by design; tests/integration/test_sse.py covers it.
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json").exclude(operation_id="streamEvents")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=ReadOnlyDatabase(FOUND) if IN_CI else FOUND,
        )
        def fuzz(case) -> None:
            case.call_and_validate(headers=auth(key), checks=[not_a_server_error])
            case.call_and_validate(checks=[not_a_server_error])  # unauthenticated too

        # one database key per operation (the function itself is the same each time) and, in CI, a
        # fixed seed per operation
        fuzz._hypothesis_internal_add_digest = operation.label.encode()
        if IN_CI:
            fuzz = seed(zlib.crc32(operation.label.encode()))(fuzz)
        fuzz()
        checked.append(operation.label)
    assert len(checked) >= 3, checked


def test_bad_ids_answer_422_not_500(api_url, tenant) -> None:
    """Regression of what the fuzzer found: an id with a NUL byte reached PostgreSQL and answered 500."""
    _, key = tenant
    for bad in ("snap\x00shot", "a/../b", "x" * 201, " lead", "ü-nicode", ""):
        r = post(f"{api_url}/v1/sandboxes", key, {"restore_snapshot": bad}, wait="false")
        assert r.status_code == 422 and r.json()["error"]["code"], (bad, r.text)
    for bad in ("sb-%00", "x" * 201, "a%20b", "%C3%BC"):
        for url in (f"/v1/sandboxes/{bad}", f"/v1/streams/{bad}/events", f"/v1/artifacts/{bad}"):
            r = httpx.get(api_url + url, headers=auth(key), timeout=30)
            assert r.status_code in (404, 422), (url, r.status_code, r.text)
    r = post(f"{api_url}/v1/snapshots/a%01b/fork", key, {"count": 1})
    assert r.status_code == 422, r.text
