"""Repository allowlists, writable paths and test counts, with plain values."""

import pytest

from astraforge.processors.runs.guardrails import forbidden, normalise, repository_allowed, writable
from astraforge.processors.runs.testing import from_junit, from_output


def test_repository_allowlist_per_tenant_and_for_all() -> None:
    allow = {"acme": ["https://github.com/acme/*"], "*": ["/srv/git/*.git"]}
    assert repository_allowed(allow, "acme", "https://github.com/acme/api")
    assert repository_allowed(allow, "other", "/srv/git/x.git")
    assert not repository_allowed(allow, "other", "https://github.com/acme/api")
    assert not repository_allowed({}, "acme", "/srv/git/x.git")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("a/b.py", "a/b.py"),
        ("/workspace/a/./b", "a/b"),
        ("../x", None),
        ("/etc/passwd", None),
        ("a/../../x", None),
        ("", None),
    ],
)
def test_normalise(path: str, name: str | None) -> None:
    assert normalise(path) == name


def test_writable_paths() -> None:
    allowed = ["src/", "README.md"]
    assert writable("src/a/b.py", allowed) and writable("README.md", allowed)
    assert not writable("srcx/a.py", allowed) and not writable("README.md.bak", allowed)
    assert not writable("../src/a.py", allowed)
    assert writable("anything", []) and forbidden(["src/x", "setup.py", "b"], allowed) == ["b", "setup.py"]


def test_junit_counts_and_hostile_reports() -> None:
    xml = b'<testsuites><testsuite tests="5" failures="1" errors="1" skipped="1"/><testsuite tests="2"/></testsuites>'
    counts = from_junit(xml)
    assert (counts.passed, counts.failed, counts.errors, counts.skipped, counts.source) == (4, 1, 1, 1, "junit")
    assert from_junit(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><testsuite tests="&a;"/>') is None
    assert from_junit(b"<testsuite") is None


def test_pytest_and_unittest_summaries() -> None:
    out = from_output("...\n===== 3 passed, 1 failed, 2 errors in 0.12s =====\n")
    assert (out.passed, out.failed, out.errors, out.source) == (3, 1, 2, "pytest")
    out = from_output("..F\n----\nRan 3 tests in 0.001s\n\nFAILED (failures=1)\n")
    assert (out.passed, out.failed, out.source) == (2, 1, "unittest")
    out = from_output("Ran 2 tests in 0.000s\n\nOK\n")
    assert (out.passed, out.failed) == (2, 0)
    assert from_output("nothing here") is None


def test_confined_dirs_are_the_writable_directories_or_a_files_directory() -> None:
    from astraforge.processors.runs.executors.script import confined_dirs

    assert confined_dirs(["src/", "docs/a.md", "x/../../etc/"]) == ["/workspace/docs", "/workspace/src"]
    assert confined_dirs(["calc.py"]) == ["/workspace"] and confined_dirs([]) == []


@pytest.mark.parametrize(
    "repository",
    [
        "/srv/git/../private/x.git",
        "/srv/git/./../x.git",
        "/srv/git/%2e%2e/x.git",
        "https://github.com/acme/../evil/api",
        "https://github.com/acme/%2E%2E/evil/api",
        "https://github.com/acme/..%2fevil/api",
        "https://github.com/acme/..\\evil/api",
    ],
)
def test_a_repository_path_that_walks_up_matches_no_pattern(repository) -> None:
    """A pattern's ``*`` matches ``/`` and ``..`` too: ``/srv/git/*`` held ``/srv/git/../private``."""
    allow = {"*": ["/srv/git/*", "https://github.com/acme/*"]}
    assert not repository_allowed(allow, "acme", repository)
