"""Drives one attempt of a run, on a thread of its own: provision a sandbox in the run's stream, put
the repository into /workspace, run the agent step by step with a diff after each, run the tests,
propose the patch; and, once approved, push the branch and open the merge request.

Everything the driver does to a sandbox goes through the sandbox processor's commands (appended to
the run's stream, answered by its records), with ids derived from the run, the attempt and the
step. A driver that resumes after a crash (a new owner of the run's partition) therefore repeats
nothing: it reads the run's records from the start (``StreamFacts``) and a command already answered
is not sent again; one accepted but not answered is answered by the sandbox processor (run once, or
closed as interrupted, which fails the run with that reason). Records the driver writes go through
``state.advance``/``state.fact``, which write each one once.
"""

import base64
import logging
import shutil
from dataclasses import replace
from typing import TYPE_CHECKING

import httpx

from astraforge.artifacts import spool
from astraforge.errors import AstraForgeError
from astraforge.processors.runs import workspace
from astraforge.processors.runs.executors.cli import AGENT as CLI_ACTOR
from astraforge.processors.runs.executors.cli import SPEC_PATH, cli_env, cli_script
from astraforge.processors.runs.executors.codex import AGENT as CODEX_ACTOR
from astraforge.processors.runs.executors.codex import CodexTranslator, codex_invocation
from astraforge.processors.runs.executors.script import SandboxCall, confined, step_call, step_paths
from astraforge.processors.runs.facts import Answer, RunCancelled, StepFailed, StreamFacts
from astraforge.processors.runs.guardrails import forbidden
from astraforge.processors.runs.session import AgentProcess, run_process, with_guidance
from astraforge.processors.runs.state import ENDED, RunState, advance, event, fact, failed
from astraforge.processors.runs.testing import TestCounts, from_junit, from_output
from astraforge.sandbox.profile import HOME
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox

if TYPE_CHECKING:
    from astraforge.processors.runs.orchestrator import RunOrchestrator

LOG = logging.getLogger(__name__)
ACTOR = "processor:runs"
SOURCE_TAR = "/tmp/astraforge-source.tar"
JUNIT_XML = "/tmp/astraforge-junit.xml"
UNPACK = f"tar -xf {SOURCE_TAR} -C /workspace && rm -f {SOURCE_TAR}"
ATTACHMENTS_DIR = f"{HOME}/attachments"  # outside /workspace: read by the agent, never in a diff
PROVISION_WAIT_S = 300.0
COMMAND_WAIT_S = 900.0
INLINE_PATCH_BYTES = 48 * 1024  # a bigger diff goes to the artifact store (records stay under 64 KiB)
UNPACKED_BYTES = 4 * 1024**3  # bound on a workspace snapshot's unpacked size on the host (a tmpfs holds less)


def attachment_bytes(attachment: dict) -> bytes:
    """An ``astraforge.Attachment``'s file content (the API checked that base64 decodes)."""
    if attachment.get("encoding") == "base64":
        return base64.b64decode(attachment["content"])
    return attachment["content"].encode()


def attachment_paths(request: dict) -> list[str]:
    """Where the agent finds the request's attachments in its sandbox."""
    return [f"{ATTACHMENTS_DIR}/{a['name']}" for a in request.get("attachments") or []]


class Driver:
    """One attempt of one run (or its merge), until it ends, is cancelled or its partition moves."""

    def __init__(self, orchestrator: "RunOrchestrator", run_id: str, attempt: int) -> None:
        self.o = orchestrator
        self.run_id = run_id
        self.attempt = attempt
        self.dir = orchestrator.work_dir / run_id / f"a{attempt}"

    # -- helpers ----------------------------------------------------------------------------
    @property
    def st(self) -> RunState:
        st = self.o.state(self.run_id)
        if st is None:
            raise RunCancelled("the run is gone from this instance")
        return st

    def stopped(self) -> bool:
        st = self.o.state(self.run_id)
        return (
            self.o.stop_event.is_set()
            or st is None
            or st.attempt != self.attempt
            or st.state in ENDED
            or not self.o.owns(self.run_id)
        )

    def settle(self, decide) -> bool:
        if self.stopped():
            raise RunCancelled("the run was stopped")
        return self.o.settle(self.run_id, decide)

    def advance(self, new_state: str, **extra) -> None:
        self.settle(lambda now: advance(now, self.attempt, new_state, ACTOR, **extra))

    def record(self, type_: str, payload: dict, actor: str = ACTOR) -> Envelope:
        e = event(self.st, type_, payload, actor, sandbox_id=self.st.sandbox_id)
        self.settle(lambda now: fact(now, self.attempt, e))
        return e

    def sandbox_command(self, type_: str, payload: dict) -> None:
        if self.stopped():
            raise RunCancelled("the run was stopped")
        st = self.st
        self.o.append(
            [
                Envelope(
                    type=type_,
                    stream_id=st.run_id,
                    tenant_id=st.tenant_id,
                    actor=ACTOR,
                    sandbox_id=st.sandbox_id,
                    payload=payload,
                )
            ]
        )

    def call(self, facts: StreamFacts, call: SandboxCall, answer: str | tuple[str, ...], key: str) -> Envelope:
        """Send ``call`` unless the run's records already answer it; its answer (an ``answer`` record
        whose ``key`` is the call's id)."""
        answers = (answer,) if isinstance(answer, str) else answer
        match = Answer(answers, key, call.payload[key])
        done = facts.find(match)
        if done is None:
            self.sandbox_command(call.type, call.payload)
            done = facts.wait(match, COMMAND_WAIT_S)
        return done

    def exec(self, facts: StreamFacts, command_id: str, shell: str, env: dict | None = None) -> Envelope:
        payload = {
            "command_id": command_id,
            "argv": [],
            "shell": shell,
            "cwd": "/workspace",
            "env": env or {},
            "timeout_s": COMMAND_WAIT_S - 60,
            "async_": False,
        }
        return self.call(facts, SandboxCall("sandbox.exec", payload), "exec.finished", "command_id")

    # -- the attempt ------------------------------------------------------------------------
    def run(self) -> None:
        facts = StreamFacts(self.o.settings, self.run_id, self.st.events_from, self.stopped)
        try:
            self.provision(facts)
            self.prepare(facts)
            last = self.agent(facts)
            self.verify(facts)
            self.propose(last)
        except RunCancelled:
            LOG.info("run %s attempt %d: driver stopped", self.run_id, self.attempt)
        except Exception as e:  # whatever it was, the run fails with it rather than hang in its state
            known = isinstance(e, StepFailed | AstraForgeError | ValueError | OSError)
            LOG.log(
                logging.WARNING if known else logging.ERROR,
                "run %s attempt %d failed: %s",
                self.run_id,
                self.attempt,
                e,
                exc_info=not known,
            )
            reason = str(e) if known else f"internal error: {type(e).__name__}"
            if not self.stopped():
                self.o.settle(self.run_id, lambda now: failed(now, self.attempt, reason, ACTOR))
        finally:
            facts.close()
            self.release()
            shutil.rmtree(self.dir, ignore_errors=True)  # host clones and trees: a resumed driver makes its own

    def release(self) -> None:
        """Stop the attempt's sandbox once it is of no more use (awaiting review or ended); a
        driver that only lost its partition leaves it to the new owner."""
        st = self.o.state(self.run_id)
        if st is None or not self.o.owns(self.run_id) or self.o.stop_event.is_set():
            return
        if st.attempt != self.attempt or st.state in ENDED or st.state == "awaiting_review":
            self.o.stop_sandbox(st, replace(st, attempt=self.attempt).sandbox_id, "run attempt over")

    def provision(self, facts: StreamFacts) -> None:
        st = self.st
        self.advance("provisioning", sandbox_id=st.sandbox_id)
        spec = RequestedSandbox(image=self.o.settings.sandbox_image, egress_allow=tuple(st.request["egress_allow"]))
        if st.request["agent"] in ("codex", "cli"):  # a model, through the proxy: a grant only the platform makes
            memory, upstream = self.o.settings.agent_memory_mb, self.o.settings.agent_model_upstream
            spec = replace(spec, limits={"memory_mb": memory}, platform_upstreams=(upstream,))
        match = Answer(("sandbox.ready", "sandbox.failed", "sandbox.terminated"), "sandbox_id", st.sandbox_id)
        outcome = facts.find(match)
        if outcome is None:
            self.sandbox_command("sandbox.create", spec.create_payload())
            outcome = facts.wait(match, PROVISION_WAIT_S)
        if outcome.type != "sandbox.ready":
            raise StepFailed(f"sandbox {st.sandbox_id} {outcome.payload['state']}: {outcome.payload.get('reason')}")

    def prepare(self, facts: StreamFacts) -> None:
        """Clone on the host, copy the tree into /workspace (no .git, no credentials)."""
        st = self.st
        self.advance("preparing", sandbox_id=st.sandbox_id)
        base = st.request.get("base_ref") or "main"
        workspace.forget_tree(self.dir / "tree", self.dir / "index")  # they describe an earlier clone
        try:
            workspace.clone(st.repository, base, self.dir / "base", self.git_env())
        except workspace.GitFailed as e:
            raise StepFailed(f"could not clone {st.repository} at {base}: {e}") from e
        source_id = f"{st.sandbox_id}-source"
        with spool() as tar:
            workspace.archive(self.dir / "base", tar)
            ref = self.o.artifacts.put_file(st.tenant_id, tar, "application/x-tar", "source.tar", source_id)
        copied = facts.find(Answer(("artifact.stored",), "artifact_id", source_id))
        if copied is None:  # what went into the sandbox, on the record
            facts.add(self.record("artifact.stored", {"artifact": ref, "command_id": None}))
        elif copied.payload["artifact"]["sha256"] != ref["sha256"]:  # a resumed driver's clone is another tree
            raise StepFailed(f"{base} of {st.repository} moved while the run was interrupted: rerun it")
        write = {
            "request_id": f"{st.sandbox_id}-source",
            "path": SOURCE_TAR,
            "content": None,
            "artifact": ref,
            "mode": 0o600,
        }
        written = self.call(facts, SandboxCall("sandbox.file.write", write), "file.written", "request_id")
        if written.payload.get("error"):
            raise StepFailed(f"could not copy the repository in: {written.payload['error']}")
        unpacked = self.exec(facts, f"{st.sandbox_id}-unpack", UNPACK)
        if unpacked.payload["exit_code"] != 0:
            raise StepFailed(f"could not unpack the repository: {unpacked.payload.get('error') or 'tar failed'}")
        for i, attachment in enumerate(st.request.get("attachments") or []):
            write = {
                "request_id": f"{st.sandbox_id}-attachment{i}",
                "path": f"{ATTACHMENTS_DIR}/{attachment['name']}",
                "content": attachment_bytes(attachment),
                "artifact": None,
                "mode": 0o644,
            }
            written = self.call(facts, SandboxCall("sandbox.file.write", write), "file.written", "request_id")
            if written.payload.get("error"):
                raise StepFailed(f"could not copy attachment {attachment['name']} in: {written.payload['error']}")

    def agent(self, facts: StreamFacts) -> Envelope | None:
        """Run the request's agent; the last ``diff.captured`` record."""
        st = self.st
        self.advance("running", sandbox_id=st.sandbox_id)
        if st.request["agent"] == "codex":
            return run_process(self, facts, self.codex_process())
        if st.request["agent"] == "cli":
            return run_process(self, facts, self.cli_process())
        if st.request["agent"] != "script":
            raise StepFailed(f"agent {st.request['agent']} is not available in this release")
        return self.script(facts)

    def codex_process(self) -> AgentProcess:
        """``codex exec --json`` on the spec (and the guidance of earlier attempts), confined to the
        writable paths like a script step, its model the platform's gateway."""
        st, settings = self.st, self.o.settings
        allowed = st.request["writable_paths"]
        prompt = with_guidance(st.request["spec"], st.guidance, allowed, attachment_paths(st.request))
        invocation = codex_invocation(
            prompt, st.run_id, st.request.get("model") or settings.agent_default_model, settings.agent_model_upstream
        )
        return AgentProcess(
            name="codex",
            command_id=f"{st.sandbox_id}-codex",
            argv=confined(invocation.argv, allowed),
            env=invocation.env,
            files=invocation.files,
            actor=CODEX_ACTOR,
            translator=CodexTranslator(f"{st.sandbox_id}-codex"),
        )

    def cli_process(self) -> AgentProcess:
        """The request's coding CLI (its command template, the run's one shell step) on the spec."""
        st, settings = self.st, self.o.settings
        allowed = st.request["writable_paths"]
        (step,) = st.request["steps"]
        prompt = with_guidance(st.request["spec"], st.guidance, allowed, attachment_paths(st.request))
        return AgentProcess(
            name="the coding CLI",
            command_id=f"{st.sandbox_id}-cli",
            argv=confined(["/bin/sh", "-c", cli_script(step["command"])], allowed),
            env=cli_env(st.run_id, settings.agent_model_upstream),
            files={SPEC_PATH: prompt.encode()},
            actor=CLI_ACTOR,
        )

    def script(self, facts: StreamFacts) -> Envelope | None:
        """The script agent's steps, each followed by ``diff.captured``; the last diff record."""
        st = self.st
        allowed = st.request["writable_paths"]
        last = None
        for i, step in enumerate(st.request["steps"]):
            step_id = f"{st.sandbox_id}-s{i}"
            outside = forbidden(step_paths(step), allowed)
            if outside:
                self.blocked(i, outside, "the step writes outside the run's writable paths")
            call = step_call(step, step_id, st.guidance, allowed)
            if call.type == "sandbox.exec":
                done = self.call(facts, call, "exec.finished", "command_id")
                if done.payload.get("error") or done.payload["exit_code"] != 0:
                    why = done.payload.get("error") or f"exited {done.payload['exit_code']}"
                    raise StepFailed(f"step {i + 1} ({step['command'][:80]}) {why}")
            else:
                done = self.call(facts, call, "file.written", "request_id")
                if done.payload.get("error"):
                    raise StepFailed(f"step {i + 1} (write {step['path']}) failed: {done.payload['error']}")
            last = self.capture(facts, i)
            outside = forbidden(last.payload["files"], allowed)
            if outside:
                self.blocked(i, outside, "the agent changed files outside the run's writable paths")
        return last

    def blocked(self, step: int, paths: list[str], detail: str) -> None:
        for path in paths:
            self.record(
                "guardrail.violated",
                {
                    "rule": "writable_paths",
                    "detail": detail,
                    "attempt": self.attempt,
                    "path": path,
                    "repository": None,
                    "step": step + 1,
                },
            )
        raise StepFailed(f"blocked: step {step + 1} touched {', '.join(paths)} (outside the writable paths)")

    def capture(self, facts: StreamFacts, step: int, tries: int = 1) -> Envelope:
        """Snapshot /workspace (a sandbox command), diff it on the host against the base, record it.
        ``tries`` > 1 snapshots again after a failed one (ids ``-r<n>``, so a resumed driver reads
        the same answers): an agent still at work can change a file while tar reads it."""
        st = self.st
        recorded = facts.find(Answer(("diff.captured",), "diff_id", f"{st.sandbox_id}-d{step}"))
        if recorded is not None:
            return recorded
        answers = ("snapshot.created", "snapshot.failed")
        for n in range(tries):
            snapshot_id = f"{st.sandbox_id}-d{step}" + (f"-r{n}" if n else "")
            snapshot = {"snapshot_id": snapshot_id, "name": f"workspace after step {step + 1}.tgz"}
            done = self.call(facts, SandboxCall("sandbox.snapshot", snapshot), answers, "snapshot_id")
            if done.type == "snapshot.created":
                break
        else:
            raise StepFailed(f"could not capture the workspace after step {step + 1}: {done.payload['error']}")
        with self.o.artifacts.get_file(done.payload["artifact"]) as archive:
            entries = self.o.settings.max_snapshot_entries
            workspace.refresh(archive, self.dir / "tree", self.dir / "index", entries, UNPACKED_BYTES)
        captured = workspace.diff(self.dir / "base", self.dir / "tree", self.dir / "index")
        inline = len(captured.patch) <= INLINE_PATCH_BYTES and _is_text(captured.patch)
        ref = None
        if not inline:
            ref = self.o.artifacts.put(
                st.tenant_id, captured.patch, "text/x-diff", f"step-{step + 1}.diff", f"{st.sandbox_id}-d{step}-diff"
            )
        payload = {
            "diff_id": f"{st.sandbox_id}-d{step}",
            "files": captured.files,
            "patch": captured.patch.decode() if inline else None,
            "artifact": ref,
            "additions": captured.additions,
            "deletions": captured.deletions,
            "attempt": self.attempt,
            "step": step,
            "binary_files": captured.binary_files,
        }
        e = self.record("diff.captured", payload)
        facts.add(e)  # what later steps (and a resumed driver) read back
        return e

    def verify(self, facts: StreamFacts) -> None:
        st = self.st
        command = st.request.get("test_command")
        self.advance("verifying", sandbox_id=st.sandbox_id)
        if not command:
            return
        env = {"PYTEST_ADDOPTS": f"--junitxml={JUNIT_XML}", "ASTRAFORGE_JUNIT_XML": JUNIT_XML}
        cid = f"{st.sandbox_id}-test"
        done = self.exec(facts, cid, command, env)
        output = b"".join(e.payload["data"] for e in facts.all(Answer(("exec.output",), "command_id", cid)))
        read = self.call(
            facts,
            SandboxCall("sandbox.file.read", {"request_id": f"{cid}-report", "path": JUNIT_XML}),
            "file.read",
            "request_id",
        )
        counts = None
        if not read.payload.get("error") and read.payload.get("content"):
            counts = from_junit(read.payload["content"])
        counts = counts or from_output(output.decode(errors="replace")) or TestCounts()
        exit_code = done.payload["exit_code"]
        payload = {
            "suite": "tests",
            "command": command,
            "passed": counts.passed,
            "failed": counts.failed,
            "skipped": counts.skipped,
            "errors": counts.errors,
            "duration_ms": done.payload["duration_ms"],
            "report": None,
            "attempt": self.attempt,
            "exit_code": exit_code,
            "source": counts.source,
        }
        self.record("test.result", payload)
        if exit_code != 0:
            if exit_code is None:
                raise StepFailed(f"tests did not finish: {done.payload.get('error')}")
            raise StepFailed(f"tests failed: exit {exit_code}, {counts.failed} failed, {counts.errors} errors")

    def propose(self, last: Envelope | None) -> None:
        """The final diff, checked again, as the attempt's patch; then ``awaiting_review``."""
        st = self.st
        if last is None or not last.payload["files"]:
            raise StepFailed("the agent changed nothing: no patch to propose")
        outside = forbidden(last.payload["files"], st.request["writable_paths"])
        if outside:  # never proposed, whatever the steps' own checks said
            self.blocked(last.payload["step"], outside, "the final diff touches paths outside the writable paths")
        patch = self.patch_bytes(last.payload)
        ref = self.o.artifacts.put(
            st.tenant_id, patch, "text/x-diff", f"{st.run_id}-attempt-{self.attempt}.patch", f"{st.sandbox_id}-patch"
        )
        if st.patch is None:
            self.record("artifact.stored", {"artifact": ref, "command_id": None})
        files = last.payload["files"]
        summary = (
            f"{len(files)} file(s) changed, +{last.payload['additions']} -{last.payload['deletions']}: "
            f"{', '.join(files[:10])}{' ...' if len(files) > 10 else ''}"
        )
        self.record(
            "patch.proposed",
            {
                "attempt": self.attempt,
                "patch": ref,
                "summary": summary,
                "files": files,
                "additions": last.payload["additions"],
                "deletions": last.payload["deletions"],
            },
        )
        self.advance("awaiting_review", sandbox_id=st.sandbox_id)

    def patch_bytes(self, diff_payload: dict) -> bytes:
        if diff_payload.get("patch") is not None:
            return diff_payload["patch"].encode()
        return self.o.artifacts.get(diff_payload["artifact"])

    # -- after approval ---------------------------------------------------------------------
    def git_env(self) -> dict[str, str] | None:
        return self.o.vcs.git_env() if self.o.vcs is not None else None

    def merge(self) -> None:
        """Push the approved patch as a branch and open the merge request, once."""
        try:
            st = self.st
            if st.merge_request is None:
                patch = self.o.artifacts.get(st.patch["patch"])
                branch = f"astraforge/{st.run_id}"
                title = st.request.get("title") or st.request["spec"].splitlines()[0][:72]
                message = f"{title}\n\nAstraForge run {st.run_id}, attempt {st.attempt}.\n"
                if st.request.get("issue_url"):  # a remediation run: the merge request links its issue
                    message += f"Issue: {st.request['issue_url']}\n"
                base = st.request.get("base_ref") or "main"
                when, into = st.approved_at // 1_000_000, self.dir / "merge"
                auth = self.git_env()
                sha = workspace.commit_and_push(st.repository, base, branch, patch, message, when, into, auth)
                if self.o.vcs is None:  # local: the branch in the source repository is the merge request
                    provider, url, number = "local", f"{workspace.source_url(st.repository)}#{branch}", st.attempt
                else:  # finds and reuses one an interrupted approval opened already
                    body = f"{st.request['spec'][:60000]}\n\n---\nAstraForge run {st.run_id}, attempt {st.attempt}."
                    mr = self.o.vcs.open(st.repository, branch, base, title, body)
                    provider, url, number = self.o.vcs.name, mr.url, mr.number
                opened = {
                    "provider": provider,
                    "url": url,
                    "number": number,
                    "branch": branch,
                    "base": base,
                    "attempt": st.attempt,
                    "commit": sha,
                }
                self.o.settle(
                    self.run_id, lambda now: fact(now, self.attempt, event(now, "merge_request.opened", opened, ACTOR))
                )
            self.o.settle(
                self.run_id, lambda now: advance(now, self.attempt, "merged", ACTOR, reason="merge request opened")
            )
        except Exception as e:  # the provider refused or was not reached; anything else fails it too, not hangs
            known = isinstance(e, AstraForgeError | OSError | httpx.HTTPError)
            LOG.log(
                logging.WARNING if known else logging.ERROR,
                "run %s: merge failed: %s",
                self.run_id,
                e,
                exc_info=not known,
            )
            reason = f"merge failed: {e}" if known else f"merge failed: internal error: {type(e).__name__}"
            self.o.settle(self.run_id, lambda now: failed(now, self.attempt, reason, ACTOR))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _is_text(patch: bytes) -> bool:
    try:
        patch.decode()
    except UnicodeDecodeError:
        return False
    return True
