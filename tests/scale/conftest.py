"""A deployment of its own for each scale test: topics with six partitions, a projection schema, the
API and the projector in this process; the test starts the processor instances."""

from collections.abc import Iterator

import pytest

from astraforge.db import connect, ensure_control_schema
from astraforge.producers.topics import ensure_topics
from astraforge.projections.postgres import drop_schema
from astraforge.sandbox.providers import make_provider
from tests.conftest import make_settings, new_tenant
from tests.gated_image import GATED_IMAGE
from tests.scale.cluster import Api
from tests.support import running_api, running_projector

PARTITIONS = 6


@pytest.fixture
def deployment(tmp_path) -> Iterator[tuple]:
    """Settings, the API's URL, a tenant's key, the docker provider and a place for instance logs."""
    s = make_settings(topic_partitions=PARTITIONS, warm_pools=[], sandbox_provider="docker",
                      sandbox_images=[GATED_IMAGE])  # fmt: skip
    ensure_topics(s)
    ensure_control_schema(s)
    provider = make_provider(s)
    try:
        with running_projector(s), running_api(s, sse_ping_s=1.0) as url:
            yield s, Api(url, *new_tenant(s)), provider, tmp_path
    finally:
        for sandbox_id in provider.list_ids():
            provider.stop(sandbox_id)
        with connect(s, autocommit=True) as conn:
            drop_schema(conn, s.projection_schema)
