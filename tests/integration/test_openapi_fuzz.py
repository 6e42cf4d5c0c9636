"""schemathesis over the live OpenAPI schema: no input, valid or not, may produce a 5xx.

(schemathesis' own pytest plugin does not load under pytest 9, so the operations are driven with
hypothesis directly; the cases and the check are schemathesis'.)
"""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.support import auth


def test_no_request_produces_a_server_error(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    # The SSE operation streams forever by design; tests/integration/test_sse.py covers it.
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json").exclude(operation_id="streamEvents")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            case.call_and_validate(headers=auth(key), checks=[not_a_server_error])
            case.call_and_validate(checks=[not_a_server_error])  # unauthenticated too

        fuzz()
        checked.append(operation.label)
    assert len(checked) >= 3, checked
