"""Mutation testing of the security-critical modules with cosmic-ray, one scope at a time.

usage: python tests/mutation/run.py [SCOPE ...]     (no scope: the quick ones; `all`: every scope)

Scopes live in tests/mutation/scopes.toml: a module, the few test files that must kill its mutants,
and optionally the classes/functions to limit mutation to. Each mutant is one small change (an
operator, a number, a boolean) applied to the file IN THIS CHECKOUT while its tests run, then undone.
The driver also restores every mutated module from its own copy when it exits (Ctrl-C included);
only a `kill -9` can leave a mutant on disk, so check `git status` after an interrupted run.

The tests run against the local stack (`make up`) like `make test`, but with a private copy of the
state dir whose `sandboxes/` and `bwrap/` are this run's own: a mutated supervisor is copied only
where this run's sandboxes mount it, never where another checkout sharing the stack would.
Results (cosmic-ray sessions and report.txt) go to .mutation/.
"""

import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".mutation"
SCOPES = tomllib.loads((Path(__file__).parent / "scopes.toml").read_text())
# plugins none of the scoped tests use: they cost seconds of start-up per mutant
PYTEST_QUIET = ["-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:hypothesispytest"]
PRIVATE = {"sandboxes", "bwrap"}
ANNOTATION = "in a type annotation"  # what a mutated sandbox module writes: never shared with other checkouts


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def private_state_dir() -> Path:
    """A state dir that links to the running stack's (sockets, logs, credentials) except PRIVATE."""
    real = Path(os.environ.get("ASTRAFORGE_STATE_DIR", ROOT / ".local")).resolve()
    if not real.is_dir():
        raise SystemExit(f"no local stack state at {real}: run `make up` first")
    mine = WORK / "state"
    mine.mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        link = mine / entry.name
        if entry.name not in PRIVATE and not link.is_symlink():
            link.symlink_to(entry)
    return mine


def line_ranges(module: Path, names: list[str]) -> list[str]:
    """Line ranges ("a-b") of the named top-level classes/functions, decorators included."""
    found = {}
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found[node.name] = f"{start}-{node.end_lineno}"
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"{module}: no top-level {', '.join(sorted(missing))} (update tests/mutation/scopes.toml)")
    return list(found.values())


def annotation_spans(module: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of every type annotation: a mutant there (`str | None` -> `str & None`)
    is either an import-time error or no change at all, never a behaviour a test could check."""
    spans = []
    for node in ast.walk(ast.parse(module.read_text())):
        annotations = []
        if isinstance(node, ast.AnnAssign | ast.arg):
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations.append(node.returns)
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in annotations if a is not None]
    return spans


def skip_annotations(session: Path, module: Path) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(module)

    def inside(m) -> bool:
        return any(start <= tuple(m.start_pos) and tuple(m.end_pos) <= end for start, end in spans)

    with use_db(str(session), WorkDB.Mode.open) as db:
        skipped = [item.job_id for item in db.pending_work_items if all(inside(m) for m in item.mutations)]
        if skipped:
            db.set_multiple_results(skipped, WorkResult(output=ANNOTATION, worker_outcome=WorkerOutcome.SKIPPED))


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers and lists of them read the same in TOML


def test_command(scope: dict) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", *PYTEST_QUIET, *scope.get("pytest_args", []), *scope["tests"]]


def write_config(name: str, scope: dict) -> Path:
    lines = [
        "[cosmic-ray]",
        f"module-path = {toml_value(scope['module'])}",
        f"timeout = {toml_value(float(scope['timeout']))}",
        "excluded-modules = []",
        f"test-command = {toml_value(shlex.join(test_command(scope)))}",
        "[cosmic-ray.distributor]",
        'name = "local"',
    ]
    if "only" in scope:
        ranges = line_ranges(ROOT / scope["module"], scope["only"])
        lines += ["[cosmic-ray.filters.line-filter]", f"lines = {toml_value({scope['module']: ranges})}"]
    config = WORK / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def run(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)


def summarize(name: str, scope: dict, session: Path, env: dict[str, str]) -> list[str]:
    counts: Counter[str] = Counter()
    survivors: list[str] = []
    for line in run(bin_path("cosmic-ray"), "dump", str(session), env=env).stdout.splitlines():
        item, result = json.loads(line)
        if result is None:
            counts["not run"] += 1
            continue
        if result["worker_outcome"] == "skipped":
            counts["annotation" if result["output"] == ANNOTATION else "out of scope"] += 1
            continue
        outcome = result["test_outcome"]
        if outcome == "killed" and result["output"] == "timeout":
            outcome = "timeout"
        counts[outcome] += 1
        if outcome == "survived":
            m = item["mutations"][0]
            diff = [d for d in (result["diff"] or "").splitlines() if d[:1] in "+-" and d[:3] not in ("---", "+++")]
            survivors.append(f"  line {m['start_pos'][0]} ({m['definition_name']}) {m['operator_name']}")
            survivors += [f"      {d.strip()}" for d in diff]
    tested = counts["killed"] + counts["timeout"] + counts["survived"] + counts["incompetent"]
    caught = counts["killed"] + counts["timeout"]
    score = f"{100 * caught / tested:.0f}%" if tested else "n/a"
    where = scope["module"] + (" " + ",".join(scope["only"]) if "only" in scope else "")
    head = (
        f"{name} ({where}): {tested} mutants, {counts['killed']} killed, {counts['timeout']} timeout, "
        f"{counts['survived']} survived, {counts['incompetent']} incompetent; score {score} "
        f"(not run: {counts['annotation']} in type annotations)"
    )
    return [head, *survivors]


def tests_pass(scope: dict, env: dict[str, str]) -> bool | None:
    """True if the scope's tests pass, False if they fail, None if they hang past the timeout."""
    proc = subprocess.Popen(
        test_command(scope),
        cwd=ROOT,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return proc.wait(timeout=scope["timeout"]) == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    finally:
        if proc.poll() is None:  # interrupted: take the test run down with us
            os.killpg(proc.pid, signal.SIGKILL)


def sql_condition_mutants(name: str, scope: dict, env: dict[str, str]) -> list[str]:
    """cosmic-ray never mutates strings, and the tenant scoping lives in SQL text: for each
    occurrence of a `sql_conditions` entry, neutralise it (`(cond OR TRUE)`, parameters unchanged)."""
    module = ROOT / scope["module"]
    source = module.read_text()
    counts: Counter[str] = Counter()
    survivors: list[str] = []
    for condition in scope.get("sql_conditions", []):
        at = source.find(condition)
        while at >= 0:
            module.write_text(source[:at] + f"({condition} OR TRUE)" + source[at + len(condition) :])
            try:
                passed = tests_pass(scope, env)
            finally:
                module.write_text(source)
            outcome = {True: "survived", False: "killed", None: "timeout"}[passed]
            counts[outcome] += 1
            if outcome == "survived":
                survivors.append(f"  line {source.count(chr(10), 0, at) + 1}: SQL `{condition}` ignored")
            at = source.find(condition, at + 1)
    total = sum(counts.values())
    head = (
        f"{name} ({scope['module']}, SQL conditions ignored): {total} mutants, {counts['killed']} killed, "
        f"{counts['timeout']} timeout, {counts['survived']} survived"
    )
    return [head, *survivors]


def run_scope(name: str, scope: dict, env: dict[str, str]) -> list[str] | None:
    """The scope's summary lines, or None if its tests fail without any mutation."""
    module = ROOT / scope["module"]
    original = module.read_bytes()
    config, session = write_config(name, scope), WORK / f"{name}.sqlite"
    try:
        steps = [["cosmic-ray", "init", str(config), str(session), "--force"]]
        if "only" in scope:
            steps.append(["cr-filter-lines", "--config", str(config), str(session)])
        for tool, *args in steps:
            done = run(bin_path(tool), *args, env=env)
            if done.returncode:
                raise SystemExit(f"{name}: {tool} failed:\n{done.stderr}")
        skip_annotations(session, module)
        print(f"{name}: baseline (the tests must pass unmutated)...", flush=True)
        baseline = run(bin_path("cosmic-ray"), "baseline", str(config), env=env)
        if baseline.returncode:
            print(f"{name}: the tests fail WITHOUT any mutation:\n{baseline.stdout}{baseline.stderr}", file=sys.stderr)
            return None
        print(f"{name}: mutating {scope['module']}...", flush=True)
        subprocess.run([bin_path("cosmic-ray"), "exec", str(config), str(session)], cwd=ROOT, env=env, check=True)
        extra = sql_condition_mutants(name, scope, env) if "sql_conditions" in scope else []
    finally:
        if module.read_bytes() != original:
            module.write_bytes(original)
            print(f"{name}: restored {scope['module']} (a mutant was left on disk)", file=sys.stderr)
    return summarize(name, scope, session, env) + extra


def main(argv: list[str]) -> int:
    names = argv or [n for n, s in SCOPES.items() if s.get("quick")]
    if names == ["all"]:
        names = list(SCOPES)
    unknown = [n for n in names if n not in SCOPES]
    if unknown:
        raise SystemExit(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}, all")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind the `finally` that restores modules
    WORK.mkdir(exist_ok=True)
    env = {**os.environ, "ASTRAFORGE_STATE_DIR": str(private_state_dir())}
    report: list[str] = []
    broken = []
    for name in names:
        lines = run_scope(name, SCOPES[name], env)
        if lines is None:
            broken.append(name)
        report += lines or [f"{name}: not run, its tests fail without any mutation"]
    (WORK / "report.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
