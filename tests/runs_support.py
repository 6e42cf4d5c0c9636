"""What the run tests share: a local bare repository with a small project, and API helpers."""

import subprocess
from pathlib import Path

import httpx

from tests.support import auth, wait_until

CALC_BROKEN = "def add(a, b):\n    return a - b\n"
CALC_FIXED = "def add(a, b):\n    return a + b\n"
TEST_CALC = (
    "import unittest\n\nfrom calc import add\n\n\n"
    "class AddTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
    "    def test_zero(self):\n        self.assertEqual(add(0, 0), 0)\n"
)
ENDED = ("merged", "rejected", "failed", "cancelled")


def git(*args: str, cwd: Path | None = None) -> str:
    env = {
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": "/usr/bin:/bin",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def bare_repository(root: Path, name: str = "calc") -> Path:
    """``root/<name>.git``: a bare repository whose ``main`` holds calc.py (broken), its tests and old.txt."""
    work, bare = root / f"{name}-work", root / f"{name}.git"
    work.mkdir(parents=True)
    (work / "calc.py").write_text(CALC_BROKEN)
    (work / "test_calc.py").write_text(TEST_CALC)
    (work / "old.txt").write_text("to be deleted\n")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "initial", cwd=work)
    git("clone", "-q", "--bare", str(work), str(bare))
    return bare


def post(url: str, key: str, body: dict | None = None, **headers: str) -> httpx.Response:
    return httpx.post(url, headers={**auth(key), **headers}, json=body, timeout=60)


def wait_state(
    api_url: str, key: str, run_id: str, states: tuple[str, ...], timeout: float = 180, attempt: int | None = None
) -> dict:
    """The run once it reaches one of ``states`` (in ``attempt`` if given; an ended run in another
    state fails at once)."""
    seen: dict = {}

    def reached() -> bool:
        r = httpx.get(f"{api_url}/v1/runs/{run_id}", headers=auth(key), timeout=30)
        if r.status_code != 200:
            return False
        seen.update(r.json())
        assert seen["state"] in states or seen["state"] not in ENDED, seen
        return seen["state"] in states and attempt in (None, seen["attempt"])

    wait_until(reached, timeout=timeout, interval=0.2, what=f"run {run_id} in {states}")
    return seen


def stream_types(api_url: str, key: str, run_id: str) -> list[dict]:
    r = httpx.get(f"{api_url}/v1/streams/{run_id}/events", headers=auth(key), params={"limit": 1000}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def stream_so_far(api_url: str, key: str, run_id: str) -> list[dict]:
    """The run's records projected so far: none (not a 404) before its first one is projected, which
    can come after POST /v1/requests answered (the answer is read from Kafka, not the projection)."""
    r = httpx.get(f"{api_url}/v1/streams/{run_id}/events", headers=auth(key), params={"limit": 1000}, timeout=30)
    return r.json()["items"] if r.status_code == 200 else []
