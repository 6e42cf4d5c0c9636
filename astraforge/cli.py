"""The ``astraforge`` command: local stack, keys, projections, the API and processors (``serve``),
agent runs (``run``, ``runs``; clients of the API in ``astraforge.runs_client``), and the audit replay."""

import contextlib
import json
import logging
import subprocess
import sys
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from astraforge.config import PROJECT_ROOT, Settings, get_settings
from astraforge.errors import AstraForgeError

app = typer.Typer(help="AstraForge: sandboxes for AI coding agents on an immutable Kafka log.", no_args_is_help=True)
dev = typer.Typer(help="The local stack: Kafka, PostgreSQL, dockerd (+ bubblewrap).", no_args_is_help=True)
keys = typer.Typer(help="API keys.", no_args_is_help=True)
projections = typer.Typer(help="Kafka -> PostgreSQL read models.", no_args_is_help=True)
schemas = typer.Typer(help="Avro schemas.", no_args_is_help=True)
artifacts = typer.Typer(help="The artifact store.", no_args_is_help=True)
app.add_typer(dev, name="dev")
app.add_typer(keys, name="keys")
app.add_typer(projections, name="projections")
app.add_typer(schemas, name="schemas")
app.add_typer(artifacts, name="artifacts")
console = Console(stderr=True)
STACK = PROJECT_ROOT / "deploy" / "local" / "stack.sh"


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(1)


def _prepare(settings: Settings) -> None:
    """Topics, control tables and the projection schema: what every process expects to exist."""
    from astraforge.db import connect, ensure_control_schema
    from astraforge.producers.topics import ensure_topics
    from astraforge.projections.postgres import create_schema

    created = ensure_topics(settings)
    if created:
        console.print(f"created topics: {', '.join(created)}")
    ensure_control_schema(settings)
    with connect(settings) as conn:
        create_schema(conn, settings.projection_schema)


@dev.command("up")
def dev_up() -> None:
    """Install (first time) and start every service, then create topics and tables. Idempotent."""
    with console.status("starting the local stack (a cold start installs packages and jars)..."):
        result = subprocess.run(["bash", str(STACK), "up"])
    if result.returncode:
        raise _fail("the local stack did not start (see the messages above)")
    try:
        _prepare(get_settings())
    except AstraForgeError as e:
        raise _fail(str(e)) from e
    dev_status()


@dev.command("down")
def dev_down() -> None:
    """Stop the services this project started (by their pids)."""
    subprocess.run(["bash", str(STACK), "down"], check=False)


@dev.command("status")
def dev_status() -> None:
    """Each service, its address and health."""
    out = subprocess.run(["bash", str(STACK), "status"], capture_output=True, text=True)
    table = Table("service", "address", "health")
    for line in out.stdout.strip().splitlines():
        name, address, health = line.split("\t")
        table.add_row(name, address, f"[green]{health}[/]" if health == "healthy" else f"[red]{health}[/]")
    Console().print(table)
    if out.returncode:
        raise typer.Exit(1)


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key acts for (created if new).")],
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Create an API key. The key is printed alone on the last line (shown once, stored hashed)."""
    from astraforge.keys import create_key

    try:
        key = create_key(get_settings(), tenant, name)
    except (ValueError, AstraForgeError) as e:
        raise _fail(str(e)) from e
    console.print(f"API key for tenant [bold]{tenant}[/] (store it now; it is not shown again):")
    print(key)


@keys.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id: the 16 hex characters after `af_`.")],
) -> None:
    """Revoke an API key. A running API may accept it for ASTRAFORGE_KEY_CACHE_TTL_S (5 s) more."""
    from astraforge.keys import revoke_key

    try:
        revoked = revoke_key(get_settings(), key_id)
    except (ValueError, AstraForgeError) as e:
        raise _fail(str(e)) from e
    if not revoked:
        raise _fail(f"no active key with id {key_id}")
    console.print(f"revoked key {key_id}")


@artifacts.command("sweep")
def artifacts_sweep() -> None:
    """Delete artifacts past the retention period and remove deleted artifacts' bytes (the sandbox
    processor also runs this every hour)."""
    from datetime import UTC, datetime

    from astraforge.artifacts import make_artifact_store
    from astraforge.processors.artifact_sweep import sweep
    from astraforge.producers.kafka import EventProducer

    settings = get_settings()
    producer = EventProducer(settings)
    try:
        result = sweep(settings, make_artifact_store(settings), producer, datetime.now(UTC))
    except AstraForgeError as e:
        raise _fail(str(e)) from e
    finally:
        producer.close()
    console.print(f"{result.expired} artifact(s) expired, {result.removed_keys} key(s) removed from the store")


@projections.command("run")
def projections_run() -> None:
    """Run the projector in the foreground (Ctrl-C stops it cleanly)."""
    from astraforge.projections.postgres import Projector

    settings = get_settings()
    _prepare(settings)
    projector = Projector(settings)
    console.print(f"projecting {settings.events_topic} into schema {projector.schema}")
    with contextlib.suppress(KeyboardInterrupt):
        projector.run()


@projections.command("rebuild")
def projections_rebuild(
    into: Annotated[str | None, typer.Option(help="Schema to rebuild into (default: <live>_rebuild).")] = None,
    swap: Annotated[bool, typer.Option(help="Make the rebuilt schema live (stop the projector first).")] = False,
) -> None:
    """Replay the events topic from offset 0 into fresh tables and compare them with the live ones."""
    from astraforge.projections.rebuild import compare, rebuild
    from astraforge.projections.rebuild import swap as swap_schemas

    settings = get_settings()
    into = into or f"{settings.projection_schema}_rebuild"
    columns = (TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("rebuild", total=None)

        def report(p) -> None:
            progress.update(task, total=sum(p.targets.values()) or None, completed=p.projected + p.dead_lettered)

        projector = rebuild(settings, into, report)
    console.print(f"projected {projector.projected} records ({projector.dead_lettered} dead-lettered) into {into}")
    diffs = compare(settings, settings.projection_schema, into)
    table = Table("table", "only in live", "only in rebuild")
    for name, (only_live, only_rebuilt) in diffs.items():
        table.add_row(name, str(only_live), str(only_rebuilt))
    Console().print(table)
    if projector.parked:
        console.print(f"[yellow]parked[/] (records need a newer release): {projector.parked}")
    if swap:
        try:
            swap_schemas(settings, into, f"{settings.projection_schema}_retired")
        except AstraForgeError as e:
            raise _fail(str(e)) from e
        console.print(f"{into} is now live; the previous tables are kept as {settings.projection_schema}_retired")
    elif any(a or b for a, b in diffs.values()):
        console.print("[yellow]live and rebuilt differ[/] (is the live projector still catching up?)")
        raise typer.Exit(1)


class ReplayFormat(StrEnum):
    text = "text"
    jsonl = "jsonl"


@app.command("replay")
def replay(
    stream_id: str,
    from_offset: Annotated[int, typer.Option("--from", help="First offset to show.")] = 0,
    follow: Annotated[bool, typer.Option(help="Keep printing new records as they arrive.")] = False,
    fmt: Annotated[ReplayFormat, typer.Option("--format")] = ReplayFormat.text,
    verify: Annotated[bool, typer.Option(help="Compare Kafka with the projection; exit 1 on any difference.")] = False,
) -> None:
    """Rebuild a run's (or sandbox's) timeline straight from Kafka."""
    from astraforge.audit import record_json, stream_records
    from astraforge.audit import verify as verify_stream

    settings = get_settings()
    if verify:
        checked, diffs = verify_stream(settings, stream_id)
        for d in diffs:
            print(f"offset {d.offset}: {d.problem}")
        console.print(f"checked {checked} records: {len(diffs)} difference(s)")
        raise typer.Exit(1 if diffs else 0)
    try:
        for p in stream_records(settings, stream_id, from_offset, follow):
            event = record_json(p.partition, p.offset, p.envelope)
            if fmt is ReplayFormat.jsonl:
                print(json.dumps(event, ensure_ascii=False, separators=(",", ":")), flush=True)
            else:
                payload = json.dumps(event["payload"], ensure_ascii=False)
                payload = payload if len(payload) <= 160 else payload[:157] + "..."
                print(
                    f"{p.offset:>8}  {event['occurred_at']}  {p.envelope.type:<24} {p.envelope.actor:<16} {payload}",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    except AstraForgeError as e:
        raise _fail(str(e)) from e


@schemas.command("release")
def schemas_release() -> None:
    """Record the current envelope schema in schemas/history/ (needed after any schema change)."""
    from astraforge.schemas import SchemaRegistry

    path = SchemaRegistry.load().release()
    console.print(f"released {path}" if path else "the current schema is already released")


# the app by name: the core never imports the API layer above it (uvicorn calls create_app(), which
# reads the same process-wide settings)
APP = "astraforge.api.main:create_app"
HTTP = "astraforge.api.server:ConfiguredHeadTimeoutProtocol"  # by name: the core never imports the API


@app.command("api")
def api(host: Annotated[str | None, typer.Option()] = None, port: Annotated[int | None, typer.Option()] = None) -> None:
    """Serve the REST + SSE API (uvicorn)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        APP, factory=True, host=host or settings.api_host, port=port or settings.api_port, http=HTTP, log_level="info"
    )


@app.command("serve")
def serve() -> None:
    """Start the local stack, the projector, the processors and the API in the foreground (Ctrl-C stops them)."""
    import uvicorn

    from astraforge.processors.alerts.processor import AlertsProcessor
    from astraforge.processors.conversations.processor import ConversationProcessor
    from astraforge.processors.runs.orchestrator import RunOrchestrator
    from astraforge.projections.postgres import Projector

    dev_up()
    settings = get_settings()
    projector = Projector(settings)
    sandboxes = _sandbox_processor(settings)
    runs = RunOrchestrator(settings)
    alerts = AlertsProcessor(settings)  # Sentry/GlitchTip alerts -> remediation runs
    conversations = ConversationProcessor(settings)  # hosted DeepAgents
    services = (projector, sandboxes, runs, alerts, conversations)
    workers = [threading.Thread(target=w.run, name=type(w).__name__, daemon=True) for w in services]
    for worker in workers:
        worker.start()
    url = f"http://{settings.api_host}:{settings.api_port}"
    hdr = '-H "Authorization: Bearer $KEY" -H "Content-Type: application/json"'
    console.print(
        f"\n[bold green]AstraForge is up[/] at {url}  (OpenAPI: {url}/docs)\n"
        + (f"The web UI is at {url}/ (sign in with an API key).\n" if settings.web_dist else "")
        + "First thing to try:\n"
        "  KEY=$(.venv/bin/astraforge keys create --tenant demo | tail -n 1)\n"
        f"  SB=$(curl -s {hdr} {url}/v1/sandboxes -d '{{}}' | jq -r .id)\n"
        f'  curl -s {hdr} {url}/v1/sandboxes/$SB/exec -d \'{{"command": "uname -a"}}\'\n'
        f'  curl -N -H "Authorization: Bearer $KEY" {url}/v1/streams/$SB/events/sse\n'
        "An agent run: see README, `Your first run` (`astraforge run --spec ... --repo ... --agent script`).\n"
        "Ctrl-C stops the API and the processors (the stack keeps running: `make down` stops it).\n",
        soft_wrap=True,  # commands stay on one line, ready to copy
    )
    try:
        uvicorn.run(APP, factory=True, host=settings.api_host, port=settings.api_port, http=HTTP, log_level="info")
    finally:
        for service in services:
            service.stop()
        for worker in workers:
            worker.join(timeout=10)


def _sandbox_processor(settings: Settings):
    from astraforge.processors.sandboxes import SandboxProcessor
    from astraforge.sandbox.providers import make_provider

    provider = make_provider(settings)
    console.print(f"sandbox provider: [bold]{provider.name}[/]")
    return SandboxProcessor(settings, provider)


class Agent(StrEnum):
    script = "script"
    codex = "codex"
    cli = "cli"


def _client(api: str | None, key: str | None):
    from astraforge.runs_client import RunsClient

    settings = get_settings()
    if not key:
        raise _fail("an API key is needed: --key or ASTRAFORGE_API_KEY (`astraforge keys create --tenant ...`)")
    return RunsClient(api or f"http://{settings.api_host}:{settings.api_port}", key)


ApiUrl = Annotated[str | None, typer.Option("--api", help="The API's base URL (default: this host's API).")]
ApiKey = Annotated[
    str | None, typer.Option("--key", envvar="ASTRAFORGE_API_KEY", help="API key (or ASTRAFORGE_API_KEY).")
]


@app.command("run")
def agent_run(
    spec: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The request: what to do (text).")],
    repo: Annotated[str, typer.Option(help="Repository URL or local path (on the tenant's allowlist).")],
    agent: Annotated[Agent, typer.Option(help="Which agent does the work.")] = Agent.script,
    script: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help='Script agent steps: a JSON list of {"run": CMD} or {"write": PATH, "content": TEXT}.',
        ),
    ] = None,
    step: Annotated[list[str] | None, typer.Option(help="A shell step for the script agent (repeatable).")] = None,
    test: Annotated[str | None, typer.Option(help="Test command, run in /workspace after the agent.")] = None,
    writable: Annotated[list[str] | None, typer.Option(help="A path the agent may change (repeatable; dir/).")] = None,
    base: Annotated[str, typer.Option(help="Base branch.")] = "main",
    title: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option(help="The model Codex asks the gateway for.")] = None,
    command: Annotated[
        str | None, typer.Option(help="The cli agent's command template ({spec_file}, or the spec on stdin).")
    ] = None,
    api: ApiUrl = None,
    key: ApiKey = None,
) -> None:
    """Submit an agent run and follow it live; exit 1 if it fails (0 once it awaits review)."""
    from astraforge.runs_client import FAILED

    steps = json.loads(script.read_text()) if script else []
    steps += [{"run": command} for command in step or []]
    local = Path(repo).expanduser()
    request = {
        "spec": spec.read_text(),
        "repository": str(local.resolve()) if local.exists() else repo,
        "agent": agent.value,
        "steps": steps,
        "test_command": test,
        "writable_paths": writable or [],
        "base_branch": base,
        "title": title,
        "model": model,
        "command": command,
    }
    client = _client(api, key)
    try:
        run = client.submit(request)
        console.print(f"run [bold]{run['id']}[/] requested")
        state = _follow(client, run["id"])
    except AstraForgeError as e:
        raise _fail(str(e)) from e
    if state == "awaiting_review":
        console.print(f"awaiting review: [bold]astraforge runs show {run['id']}[/], then approve or reject it")
    raise typer.Exit(1 if state in FAILED else 0)


def _follow(client, run_id: str, attempt: int = 1) -> str:
    """Print the run's progress as its records arrive, until ``attempt`` awaits review or the run
    ends; its last state."""
    state = "requested"
    with console.status(f"{run_id}: {state}") as status:
        for record in client.follow(run_id, attempt=attempt):
            p = record.payload
            if record.type.startswith("run.") and "state" in p:
                state = p["state"]
                status.update(f"{run_id}: [bold]{state}[/] (attempt {p['attempt']})")
                reason = f" - {p['reason']}" if p.get("reason") else ""
                style = "red" if state in ("failed", "cancelled", "rejected") else "green"
                console.print(f"[{style}]{state}[/]{reason}")
            elif record.type == "exec.started":
                argv = p["argv"][p["argv"].index("--") + 1 :] if "--" in p["argv"] else p["argv"]  # past confine
                console.print(f"  [dim]$[/] {' '.join(argv)[:160]}")
            elif record.type == "exec.finished" and p.get("exit_code"):
                console.print(f"  [yellow]exit {p['exit_code']}[/] {p.get('error') or ''}")
            elif record.type == "diff.captured":
                console.print(
                    f"  diff after step {p['step'] + 1}: {len(p['files'])} file(s) +{p['additions']} -{p['deletions']}"
                )
            elif record.type == "tool.called" and p["name"] == "command":
                console.print(f"  [dim]agent $[/] {json.loads(p['arguments_json']).get('command', '')[:160]}")
            elif record.type == "chat.message" and p["role"] in ("agent", "error"):
                console.print(f"  [cyan]{p['role']}:[/] {p['text'][:300]}", soft_wrap=True)
            elif record.type == "test.result":
                console.print(f"  tests: {p['passed']} passed, {p['failed']} failed, {p['errors']} errors")
            elif record.type == "guardrail.violated":
                console.print(f"  [red]guardrail[/] {p['rule']}: {p.get('path') or ''} {p['detail']}")
            elif record.type == "patch.proposed":
                console.print(f"  patch: {p['summary']}")
            elif record.type == "merge_request.opened":
                console.print(f"  merge request: {p['url']}", soft_wrap=True)
    return state


runs = typer.Typer(help="Agent runs: list, show, review, cancel.", no_args_is_help=True)
app.add_typer(runs, name="runs")


@runs.command("list")
def runs_list(
    state: Annotated[str | None, typer.Option()] = None,
    repository: Annotated[str | None, typer.Option()] = None,
    text: Annotated[str | None, typer.Option()] = None,
    api: ApiUrl = None,
    key: ApiKey = None,
) -> None:
    """The tenant's runs (filtered by state, repository, text)."""
    try:
        items = _client(api, key).list(state=state, repository=repository, text=text)
    except AstraForgeError as e:
        raise _fail(str(e)) from e
    table = Table(Column("run", no_wrap=True), "state", "attempt", "repository", "title", "updated")
    for r in items:
        table.add_row(r["id"], r["state"], str(r["attempt"]), r["repository"] or "", r["title"] or "", r["updated_at"])
    Console().print(table)


@runs.command("show")
def runs_show(run_id: str, api: ApiUrl = None, key: ApiKey = None) -> None:
    """One run with its attempts (diffs, tests, patch, violations, merge request) as JSON."""
    try:
        print(json.dumps(_client(api, key).show(run_id), indent=2))
    except AstraForgeError as e:
        raise _fail(str(e)) from e


def _review(
    run_id: str,
    decision: str,
    api: str | None,
    key: str | None,
    comment: str | None = None,
    guidance: str | None = None,
) -> None:
    client = _client(api, key)
    try:
        run = client.review(run_id, decision, comment, guidance)
        console.print(f"run {run_id}: {run['state']}")
        if decision != "reject":
            state = _follow(client, run_id, run["attempt"]) if decision == "rerun" else _until_merged(client, run_id)
            raise typer.Exit(1 if state in ("failed", "cancelled", "rejected") else 0)
    except AstraForgeError as e:
        raise _fail(str(e)) from e


def _until_merged(client, run_id: str) -> str:
    state = "approved"
    for record in client.follow(run_id, until=("merged", "failed")):
        if record.type == "merge_request.opened":
            console.print(
                f"merge request: [bold]{record.payload['url']}[/] (commit {record.payload['commit']})", soft_wrap=True
            )
        if record.type.startswith("run.") and record.payload.get("state") in ("merged", "failed"):
            state = record.payload["state"]
            console.print(f"{state}{' - ' + record.payload['reason'] if record.payload.get('reason') else ''}")
    return state


@runs.command("approve")
def runs_approve(
    run_id: str, comment: Annotated[str | None, typer.Option()] = None, api: ApiUrl = None, key: ApiKey = None
) -> None:
    """Approve the patch: its branch is pushed and a merge request opened."""
    _review(run_id, "approve", api, key, comment)


@runs.command("reject")
def runs_reject(
    run_id: str, comment: Annotated[str | None, typer.Option()] = None, api: ApiUrl = None, key: ApiKey = None
) -> None:
    """Reject the patch (the run ends)."""
    _review(run_id, "reject", api, key, comment)


@runs.command("rerun")
def runs_rerun(
    run_id: str,
    guidance: Annotated[str, typer.Option(help="What the next attempt should do differently.")],
    api: ApiUrl = None,
    key: ApiKey = None,
) -> None:
    """Start a new attempt with guidance (every attempt is kept)."""
    _review(run_id, "rerun", api, key, guidance=guidance)


@runs.command("cancel")
def runs_cancel(
    run_id: str, reason: Annotated[str | None, typer.Option()] = None, api: ApiUrl = None, key: ApiKey = None
) -> None:
    """Cancel the run at any stage before approval (its agent and sandbox are stopped)."""
    try:
        run = _client(api, key).cancel(run_id, reason)
    except AstraForgeError as e:
        raise _fail(str(e)) from e
    console.print(f"run {run_id}: {run['state']}")


processors = typer.Typer(help="Stream processors.", no_args_is_help=True)
app.add_typer(processors, name="processors")


@processors.command("sandboxes")
def processors_sandboxes() -> None:
    """Run the sandbox processor in the foreground (Ctrl-C stops it; sandboxes keep running)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    _prepare(settings)
    processor = _sandbox_processor(settings)
    with contextlib.suppress(KeyboardInterrupt):
        processor.run()


@processors.command("runs")
def processors_runs() -> None:
    """Run the run orchestrator in the foreground (Ctrl-C stops it; a restarted one resumes the runs)."""
    from astraforge.processors.runs.orchestrator import RunOrchestrator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    _prepare(settings)
    orchestrator = RunOrchestrator(settings)
    with contextlib.suppress(KeyboardInterrupt):
        orchestrator.run()


@processors.command("conversations")
def processors_conversations() -> None:
    """Run the conversation processor (hosted DeepAgents) in the foreground (Ctrl-C stops it; a
    restarted one resumes the replies under way)."""
    from astraforge.processors.conversations.processor import ConversationProcessor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    _prepare(settings)
    processor = ConversationProcessor(settings)
    with contextlib.suppress(KeyboardInterrupt):
        processor.run()


def main() -> None:
    try:
        app()
    except AstraForgeError as e:
        console.print(f"[bold red]error:[/] {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
