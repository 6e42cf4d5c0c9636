"""Test counts from what a test command left: a JUnit XML report when there is one, else the
summary line pytest or unittest printed, else only the exit code. Reports come from the sandbox,
so they are untrusted: bounded in size and read without entity expansion."""

import contextlib
import re
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError, XMLParser

MAX_REPORT_BYTES = 4 * 1024 * 1024
PYTEST = re.compile(r"=+ (.*?) in [\d.]+s")
PYTEST_PART = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")
UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in", re.M)
UNITTEST_FAILED = re.compile(r"^FAILED \((.*)\)", re.M)


@dataclass(frozen=True)
class TestCounts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    source: str = "exit_code"


def from_junit(xml: bytes) -> TestCounts | None:
    """Sums over every <testsuite> (a <testsuites> root or a single suite); None if unreadable."""
    if len(xml) > MAX_REPORT_BYTES or b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        return None
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}

    class Target:
        def start(self, tag, attrs):
            if tag == "testsuite":
                for name in totals:
                    with contextlib.suppress(ValueError):
                        totals[name] += int(attrs.get(name, 0) or 0)

        def end(self, tag):
            pass

        def close(self):
            return None

    try:
        parser = XMLParser(target=Target())
        parser.feed(xml)
        parser.close()
    except ParseError:
        return None
    bad = totals["failures"] + totals["errors"] + totals["skipped"]
    return TestCounts(
        passed=max(totals["tests"] - bad, 0),
        failed=totals["failures"],
        skipped=totals["skipped"],
        errors=totals["errors"],
        source="junit",
    )


def from_output(text: str) -> TestCounts | None:
    """pytest's final summary line, or unittest's ``Ran N tests`` + ``OK``/``FAILED (...)``."""
    summaries = PYTEST.findall(text)
    for summary in reversed(summaries):
        parts = {
            kind.removesuffix("s") if kind.startswith("error") else kind: int(n)
            for n, kind in PYTEST_PART.findall(summary)
        }
        if parts:
            return TestCounts(
                passed=parts.get("passed", 0),
                failed=parts.get("failed", 0),
                skipped=parts.get("skipped", 0),
                errors=parts.get("error", 0),
                source="pytest",
            )
    ran = UNITTEST_RAN.findall(text)
    if ran:
        total = int(ran[-1])
        failed = dict.fromkeys(("failures", "errors", "skipped"), 0)
        fails = UNITTEST_FAILED.findall(text)
        for item in fails[-1].split(",") if fails else []:
            name, _, n = item.strip().partition("=")
            if name in failed and n.isdigit():
                failed[name] = int(n)
        skipped = sum(int(n) for n in re.findall(r"skipped=(\d+)", text[-500:])) if not fails else failed["skipped"]
        passed = total - failed["failures"] - failed["errors"] - skipped
        return TestCounts(
            passed=max(passed, 0),
            failed=failed["failures"],
            skipped=skipped,
            errors=failed["errors"],
            source="unittest",
        )
    return None
