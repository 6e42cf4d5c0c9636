"""Egress through the host-side proxy: allowlist, methods, attribution, credential injection, and
proof that the credential never enters the sandbox. The upstream listens at a globally routable
address inside a network namespace the session created (tests/netns.py: the proxy refuses the
host's own loopback); the sandbox reaches it only through the proxy (it has no route of its own)."""

import base64

import httpx

from tests.conftest import EGRESS_SECRET
from tests.integration.test_sandbox_api import create, post
from tests.support import auth, wait_until


def fetch(url: str, method: str = "GET", auth_header: str | None = None) -> str:
    headers = {"Authorization": auth_header} if auth_header else {}
    data = "b''" if method == "POST" else "None"
    return (
        f"python - <<'PY'\nimport urllib.request, urllib.error\n"
        f"req = urllib.request.Request({url!r}, method={method!r}, data={data}, headers={headers!r})\n"
        "try:\n    r = urllib.request.urlopen(req, timeout=10)\n    print(r.status, r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n"
        "except Exception as e:\n    print('ERR', type(e).__name__, e)\nPY"
    )


HUNT = """python - <<'PY'
import base64, os, pathlib
needle = base64.b64decode("NEEDLE")
env = sum(needle in v.encode() for v in os.environ.values())
files = 0
for root in ("/workspace", "/tmp", "/home", "/run", "/etc"):
    for p in pathlib.Path(root).rglob("*"):
        try:
            files += p.is_file() and needle in p.read_bytes()
        except OSError:
            pass
proc = 0
for p in pathlib.Path("/proc").glob("[0-9]*"):
    for name in ("environ", "cmdline"):
        try:
            proc += needle in (p / name).read_bytes()
        except OSError:
            pass
print(f"env={env} files={files} proc={proc}")
PY"""


def test_allowlist_methods_attribution_and_credentials(api_url, sandbox_processor, tenant, egress_upstream) -> None:
    _, key = tenant
    target = f"{egress_upstream.ip}:{egress_upstream.port}"
    sid = create(api_url, key, egress_allow=[f"GET {target}"])["id"]
    base = f"{api_url}/v1/sandboxes/{sid}"

    ok = post(f"{base}/exec", key, {"command": fetch(f"http://{target}/data", auth_header="Bearer placeholder")}).json()
    assert ok["stdout"].startswith("200 hello from upstream"), ok
    head = egress_upstream.requests()[-1]["head"]
    assert head.startswith("GET /data HTTP/1.1\r\n")
    assert f"\r\nAuthorization: Bearer {EGRESS_SECRET}\r\n" in head, "the proxy swapped the placeholder"
    assert "placeholder" not in head and "Proxy-Authorization" not in head

    denied_method = post(f"{base}/exec", key, {"command": fetch(f"http://{target}/x", "POST")}).json()
    assert denied_method["stdout"].startswith("403"), denied_method
    denied_host = post(f"{base}/exec", key, {"command": fetch(f"http://{egress_upstream.ip}:9/other")}).json()
    assert denied_host["stdout"].startswith("403"), denied_host
    assert not [r for r in egress_upstream.requests() if r["head"].split()[1] in ("/x", "/other")]

    def egress_events() -> list[dict]:
        items = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000}).json()[
            "items"
        ]
        return [e for e in items if e["type"].startswith("egress.")]

    wait_until(lambda: len(egress_events()) >= 3, timeout=20, what="egress records")
    allowed, by_method, by_host = egress_events()[:3]
    assert allowed["type"] == "egress.allowed" and allowed["payload"]["credential_injected"]
    assert allowed["payload"]["command_id"] == ok["command_id"], "attributed to the exec that made it"
    assert (by_method["type"], by_method["payload"]["method"]) == ("egress.denied", "POST")
    assert by_method["payload"]["command_id"] == denied_method["command_id"]
    assert (by_host["type"], by_host["payload"]["port"]) == ("egress.denied", 9)

    # the credential is nowhere inside the sandbox: env, files, /proc
    needle = base64.b64encode(EGRESS_SECRET.encode()).decode()  # the hunt must not carry the secret itself
    hunt = post(f"{base}/exec", key, {"command": HUNT.replace("NEEDLE", needle)}).json()
    assert hunt["stdout"].split() == ["env=0", "files=0", "proc=0"], hunt
    post(f"{base}/stop", key)


def test_without_an_allowlist_nothing_leaves(api_url, sandbox_processor, tenant, egress_upstream) -> None:
    _, key = tenant
    sid = create(api_url, key)["id"]
    url = f"http://{egress_upstream.ip}:{egress_upstream.port}/data"
    result = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": fetch(url)}).json()
    assert result["stdout"].startswith("ERR"), result  # no proxy, no route
    proxied = post(
        f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": (f"HTTP_PROXY=http://127.0.0.1:3128 {fetch(url)}")}
    ).json()
    assert proxied["stdout"].startswith("ERR"), proxied  # the forwarder has no proxy to reach
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_bad_rules_are_refused(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    for rules in (["GET POST example.org"], ["example.org:http"], [""]):
        r = post(f"{api_url}/v1/sandboxes", key, {"egress_allow": rules})
        assert r.status_code == 422, (rules, r.text)
