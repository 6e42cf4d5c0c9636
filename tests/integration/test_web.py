"""The platform serves its own UI and docs: /docs with local assets only, the built web UI at `/`
with a fallback that never shadows the API, and `replay --verify` over HTTP for the audit page."""

import http.client
import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlparse

import httpx
import pytest
from psycopg import sql

from astraforge.db import connect
from astraforge.producers.kafka import EventProducer
from tests.conftest import new_tenant
from tests.support import auth, chat, running_api, wait_until


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """A built UI's shape (vite's output): index.html and a hashed asset."""
    root = tmp_path_factory.mktemp("dist")
    (root / "assets").mkdir()
    (root / "assets" / "index-abc123.js").write_text("console.log('ui')\n")
    page = '<!doctype html><div id="root"></div><script src="/assets/index-abc123.js"></script>'
    (root / "index.html").write_text(page)
    return root


@pytest.fixture(scope="module")
def web_api(settings, projector, dist) -> Iterator[str]:
    with running_api(settings.model_copy(update={"web_dist": dist})) as url:
        yield url


def test_docs_load_nothing_from_another_origin(web_api) -> None:
    """On main /docs pulled Swagger UI from a CDN: blank on an air-gapped host."""
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{web_api}{page}").text
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(r"url: ?'([^']+)'", html)
        assert len(urls) >= 2, html
        for url in urls:
            absolute = urljoin(f"{web_api}{page}", url)
            assert urlparse(absolute).netloc == urlparse(web_api).netloc, f"{page} loads {url} from elsewhere"
            assert httpx.get(absolute).status_code == 200, absolute
        assert "googleapis" not in html and "cdn" not in html.lower()


def test_the_ui_is_served_at_root_with_a_fallback_that_never_shadows_the_api(web_api, tenant) -> None:
    _, key = tenant
    for path in ("/", "/runs", "/runs/r-123", "/sandboxes/sb-1", "/audit/x"):
        r = httpx.get(f"{web_api}{path}")
        assert r.status_code == 200 and '<div id="root">' in r.text, path
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-cache"
    asset = httpx.get(f"{web_api}/assets/index-abc123.js")
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert httpx.get(f"{web_api}/assets/missing.js").status_code == 404
    # API paths keep their own answers: JSON errors, the schema, and a route's 405
    for path in ("/v1/no-such-thing", "/v1/runs/r-missing", "/docs/nothing", "/openapi.json/x", "/health/x"):
        r = httpx.get(f"{web_api}{path}", headers=auth(key))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (path, r.text)
    assert httpx.get(f"{web_api}/openapi.json").json()["openapi"].startswith("3.")
    assert httpx.get(f"{web_api}/v1/runs").status_code == 401
    assert httpx.delete(f"{web_api}/v1/runs", headers=auth(key)).status_code == 405
    assert httpx.post(f"{web_api}/runs", headers=auth(key)).status_code == 404  # the UI answers GET only


def test_no_ui_without_a_build(api_url) -> None:
    assert httpx.get(f"{api_url}/").status_code == 404
    assert httpx.get(f"{api_url}/docs").status_code == 200


def test_verify_endpoint_gives_replay_verify_result(web_api, settings) -> None:
    tenant, key = new_tenant(settings)
    stream = f"audit-{tenant}"
    producer = EventProducer(settings)
    try:
        producer.append_many([chat(stream, tenant, f"step {n}") for n in range(5)])
    finally:
        producer.close()
    url = f"{web_api}/v1/streams/{stream}"
    projected = lambda: len(httpx.get(f"{url}/events", headers=auth(key)).json().get("items", [])) == 5  # noqa: E731
    wait_until(projected, what="the records projected")
    r = httpx.get(f"{url}/verify", headers=auth(key), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"stream_id": stream, "checked": 5, "ok": True, "differences": []}

    with connect(settings) as conn:
        schema = sql.Identifier(settings.projection_schema)
        conn.execute(
            sql.SQL("""UPDATE {}.events SET payload = '{{"text": "forged"}}' WHERE stream_id = %s AND "offset" = (
                SELECT min("offset") FROM {}.events WHERE stream_id = %s)""").format(schema, schema),
            (stream, stream),
        )
    bad = httpx.get(f"{url}/verify", headers=auth(key), timeout=60).json()
    assert bad["ok"] is False and bad["checked"] == 5
    assert any("forged" in d["problem"] for d in bad["differences"]), bad

    _, other_key = new_tenant(settings)
    assert httpx.get(f"{url}/verify", headers=auth(other_key)).status_code == 404
    assert httpx.get(f"{url}/verify").status_code == 401


def test_the_fallback_serves_no_file_outside_the_build_and_no_5xx_on_hostile_paths(web_api) -> None:
    """Traversal (encoded or not, sent as is: no client normalising it), NUL bytes and very long
    paths get the page or a 404, never a file outside the build, never a 5xx; /v1 spelled in
    percent-escapes is still the API's."""
    host = urlparse(web_api)
    hostile = [
        "/..%2f..%2fetc/passwd",
        "/assets/../../etc/passwd",
        "/assets/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/assets/%5c..%5c..%5cetc/passwd",
        "/assets/a%00.js",
        "/%00",
        "/" + "a" * 8000,
        "/assets/" + "a/" * 3000,
        "/docs-assets/..%2f..%2f..%2fetc%2fpasswd",
    ]
    for path in hostile:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        assert r.status in (200, 404), (path[:80], r.status)
        assert b"root:" not in body and (r.status == 404 or b'<div id="root">' in body), path[:80]
    assert httpx.get(f"{web_api}/%76%31/runs").status_code == 401  # the API's, not the page
