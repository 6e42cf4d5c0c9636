"""The sandbox processor's side effects: provider and supervisor calls whose outcomes become records.

Each effect runs on a thread of its lane (see ``processor.py``), never on the partition's loop. An
effect does its I/O and then *settles*: it hands a pure function of the sandbox's current state
(``state.started``/``finished``/``outcome``/``provisioned``) to ``Processor.settle``, which computes
the records under the partition's lock, appends them and folds them. So a transition is always
decided on the state as it is when the outcome is written, and an outcome for a command that was
already closed (e.g. by a new owner after a rebalance) writes nothing.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from psycopg import sql

from astraforge import leases
from astraforge.artifacts import MAX_INLINE_BYTES, spool
from astraforge.db import connect
from astraforge.errors import ValidationError
from astraforge.processors.artifact_sweep import within_artifact_quota
from astraforge.processors.lanes import Gate
from astraforge.processors.sandboxes.handoff import Detached, RecordedOutput, recorded_output
from astraforge.processors.sandboxes.lease_guard import CommandCheck, LeaseGuard, Violation
from astraforge.processors.sandboxes.state import (
    ENDED,
    Effect,
    SandboxState,
    event,
    finished,
    finished_payload,
    lifecycle,
    outcome,
    provisioned,
    started,
)
from astraforge.sandbox.client import PreparedExec, SupervisorError, SupervisorResult, SupervisorUnavailable
from astraforge.sandbox.egress import parse_rules
from astraforge.sandbox.profile import SecurityProfile
from astraforge.sandbox.providers.base import SandboxSpec
from astraforge.sandbox.snapshots import RESTORE_COMMAND, SNAPSHOT_COMMAND, check_snapshot
from astraforge.schemas import Envelope

if TYPE_CHECKING:
    from astraforge.processors.sandboxes.processor import SandboxProcessor

LOG = logging.getLogger(__name__)
ACTOR = "processor:sandboxes"
MAX_RECORDED_OUTPUT = 1024 * 1024  # per command, as exec.output records; the rest goes to one artifact
UNAVAILABLE = "unavailable: the sandbox is not running or its supervisor does not answer"
INTERRUPTED = "the processor that ran it stopped or gave its partition away"
DETACHED = object()  # what an exec effect returns when it let its command go (see ``Effects.run``)


def exec_argv(payload: dict) -> list[str]:
    """What a ``sandbox.exec`` runs: its argv, or its shell line through ``/bin/sh -c``."""
    return payload["argv"] or ["/bin/sh", "-c", payload["shell"] or ""]


def _command_id(effect: Effect) -> str | None:
    """The id of the accepted command an effect runs (exec, file, snapshot, or its resumption), else None."""
    if effect.pending is not None:
        return effect.pending.command_id
    if effect.command is None or effect.kind not in ("exec", "write", "read", "snapshot"):
        return None
    p = effect.command.payload
    return p.get("command_id") or p.get("request_id") or p.get("snapshot_id")


def public_reason(error: BaseException) -> str:
    """What a tenant may read about a failed provision: a refusal of the request says why; an engine's or
    library's text (host paths, socket names, daemon internals) stays in the processor log."""
    if isinstance(error, ValidationError):
        return str(error)
    if isinstance(error, SupervisorUnavailable):
        return "the sandbox's supervisor did not come up"
    return f"the sandbox engine could not create it ({type(error).__name__}; details in the processor log)"


class Prepared:
    """What an exec got ready before its accept was acknowledged (``Effects._prepare``)."""

    def __init__(self, handle, check: CommandCheck) -> None:
        self.handle = handle
        self.check: CommandCheck | None = check
        self.call: PreparedExec | None = None  # the supervisor's connection, its request not sent

    def take_check(self) -> CommandCheck:
        """The watch, now the running command's (``_record`` ends it)."""
        check, self.check = self.check, None
        return check

    def release(self) -> None:
        """Let go of what the command did not take: an unsent connection, a watch never handed over."""
        if self.call is not None:
            self.call.close()
        if self.check is not None:
            self.check.drop()
            self.check = None


class SnapshotTooLarge(ValueError):
    """The workspace archive passed ``max_snapshot_bytes`` while it streamed out."""


class Effects:
    def __init__(self, processor: "SandboxProcessor") -> None:
        self.p = processor
        self.settings = processor.settings
        self.provider = processor.provider
        self.artifacts = processor.artifacts
        self.guard = LeaseGuard(processor.settings)  # leased files hold against others' commands
        self._stop_failures: dict[str, str] = {}  # sandbox id -> the stop failure last recorded
        self._working: set[str] = set()  # ids of the accepted commands an effect of this instance runs now
        self._working_lock = threading.Lock()

    def run(self, sandbox_id: str, effect: Effect, gate: Gate | None = None) -> None:
        """Run one effect. An accepted command runs in one effect at a time here: a take-over that reloads
        a partition this instance kept (``Runtime.continued`` false) resumes every pending command
        again, while the effect that had it may still be waiting for its sandbox or running it; the
        second one would close it with the supervisor's ``duplicate`` refusal, or as not running.

        ``gate``: an exec handed over before its accept was appended gets ready while the broker
        acknowledges it (``_prepare``: the sandbox's leases read, the leased files fingerprinted, the
        supervisor's connection open, nothing sent), then waits: it runs once the gate opens (its
        state then is the one the accept was folded into) and is let go if the gate is cancelled."""
        prepared = self._prepare(sandbox_id, effect) if gate is not None else None
        try:
            if gate is not None and not gate.wait():
                return
            self._run(sandbox_id, effect, prepared)
        finally:
            if prepared is not None:
                prepared.release()

    def _run(self, sandbox_id: str, effect: Effect, prepared: "Prepared | None") -> None:
        st = self.p.state(sandbox_id)
        if st is None:
            return
        if not self.p.may_act(st.stream_id):  # fenced (a stalled instance waking up) or moved: not ours to do
            LOG.info("effect %s on %s not started: its partition is not provably ours", effect.kind, sandbox_id)
            return
        work = _command_id(effect)
        with self._working_lock:
            if work in self._working:
                LOG.info("effect %s of %s on %s: already under way here", effect.kind, work, sandbox_id)
                return
            if work is not None:
                self._working.add(work)
        detached = False
        try:
            act = getattr(self, effect.kind)
            detached = (act(st, effect) if prepared is None else act(st, effect, prepared)) is DETACHED
        except Exception:  # an effect must never kill the processor; the failure is logged
            LOG.exception("effect %s on %s failed", effect.kind, sandbox_id)
        finally:
            if work is not None:
                with self._working_lock:
                    self._working.discard(work)
        if detached:
            self._reattach_if_ours(sandbox_id, work)

    def _prepare(self, sandbox_id: str, effect: Effect) -> "Prepared | None":
        """What an exec can get ready before its accept is acknowledged, none of it seen by the command
        (it has not started): its sandbox's handle, the lease guard's watch (leases read, files
        fingerprinted and kept) and the supervisor's connection. Never raises: None if any of it
        failed (let go again; the command then gets it all ready as it runs)."""
        cmd = effect.command
        p = cmd.payload
        prepared = Prepared(None, CommandCheck(self.guard, sandbox_id, cmd.actor))
        try:
            st = self.p.state(sandbox_id)  # ready or busy (it starts with its accept): the runtime id stays
            prepared.handle = None if st is None else self.provider.handle(st.runtime_id)
            if prepared.handle is None:  # looked up again as it runs
                return None
            client = prepared.handle.client
            prepared.check.start(client)
            prepared.call = client.prepare_exec(
                exec_argv(p), p["cwd"], p["env"], p["timeout_s"], p["command_id"], egress=st.has_egress
            )
        except Exception as e:  # the command runs as if nothing was prepared: what failed fails again there
            LOG.info("exec %s: not prepared before its accept was acknowledged (%s)", p["command_id"], e)
            prepared.release()
            return None
        return prepared

    def _reattach_if_ours(self, sandbox_id: str, command_id: str) -> None:
        """A command let go here whose partition is this instance's again (it was dropped and taken
        back, e.g. reloaded after a missed generation): the take-over's re-attach found it still under
        way here and left it; now nobody reads it, so re-attach."""
        st = self.p.state(sandbox_id)
        if st is None or command_id not in st.running or not self.p.owns(st.stream_id):
            return
        pending = next((p for p in st.pending if p.command_id == command_id), None)
        if pending is not None:
            self.p.dispatch(sandbox_id, [Effect("reattach", pending=pending)])

    def forget(self, sandbox_id: str) -> None:
        """The sandbox left this instance (ended past its grace, or its partition moved): drop what was
        kept about it (a stop failure recorded once per distinct failure)."""
        self._stop_failures.pop(sandbox_id, None)

    def working(self) -> frozenset[str]:
        """Ids of the accepted commands an effect of this instance runs (or waits to run) now."""
        with self._working_lock:
            return frozenset(self._working)

    def _wait_ready(self, sandbox_id: str, timeout: float = 60) -> SandboxState | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.p.state(sandbox_id)
            if st is None or st.state in ENDED or st.state == "stopping":
                return None
            if st.state in ("ready", "busy"):
                return st
            time.sleep(0.01)
        return None

    # -- lifecycle --------------------------------------------------------------------------
    def provision(self, st: SandboxState, effect: Effect) -> None:
        if effect.reason == "reconcile":  # its previous owner may have claimed a warm sandbox for it already
            runtime_id = self._claimed_before(st)
        else:
            runtime_id = self.p.pools.claim(st)
            if runtime_id:
                self.p.refill_soon()
        details = {"provider_id": runtime_id, "warm_pool": "hit"} if runtime_id else {"warm_pool": "miss"}
        runtime_id = runtime_id or st.sandbox_id
        try:
            if st.image not in self.settings.allowed_images:  # a record from before the API checked it
                raise ValidationError(f"image {st.image} is not allowed")
            if details["warm_pool"] == "miss":
                profile = SecurityProfile.with_overrides(st.profile)
                handle = self.provider.create(SandboxSpec(runtime_id, image=st.image, profile=profile))
                if st.restore_snapshot:
                    self._restore(st, handle.client, profile.workspace_mb * 1024 * 1024)
                self._open_egress(st, handle)
        except Exception as e:
            if not self.p.owns(st.stream_id):  # moved meanwhile: the new owner re-drives it, in this container
                LOG.info("provision of %s failed after its partition moved: left to the new owner", st.sandbox_id)
                return
            try:  # roll back whatever half exists
                self.provider.stop(runtime_id)
                self.p.pools.forget(runtime_id)
            except Exception:  # still a fact below; the periodic reconcile reaps the orphan
                LOG.exception("rollback of %s failed", st.sandbox_id)
            LOG.error("provision of %s failed", st.sandbox_id, exc_info=e)
            reason = f"provision failed: {public_reason(e)}"
            failed = lifecycle(st, "failed", ACTOR, reason=reason, provider=self.provider.name)
            self.p.settle(st.sandbox_id, lambda now: [failed] if now.state not in ENDED else [])
            return
        name = self.provider.name
        if not self.p.settle(st.sandbox_id, lambda now: provisioned(now, ACTOR, name, details)):
            current = self.p.state(st.sandbox_id)
            # stopped while provisioning; a state gone with its partition is the new owner's container
            if (
                current is not None
                and self.p.owns(st.stream_id)
                and (current.state in ENDED or current.state == "stopping")
            ):
                self.provider.stop(runtime_id)

    def _claimed_before(self, st: SandboxState) -> str | None:
        """The warm sandbox an interrupted provision claimed for ``st`` (it stopped between the claim and
        ``sandbox.ready``), if it still runs: the provision completes in it rather than in a second,
        cold container while the claimed one waits, unused, for the sandbox's end."""
        runtime_id = st.provider_id or self.p.pools.claimed_for(st.sandbox_id)
        if runtime_id is None or runtime_id == st.sandbox_id:
            return None
        if self.provider.handle(runtime_id) is None:  # gone: a cold create; the reconcile reaps what is left
            return None
        return runtime_id

    def _restore(self, st: SandboxState, client, workspace_bytes: int) -> None:
        ref = self._snapshot_ref(st.tenant_id, st.restore_snapshot)
        if ref is None:
            raise ValueError(f"snapshot {st.restore_snapshot} not found")
        with self.artifacts.get_file(ref) as archive:
            # untrusted bytes: refuse escapes (and hostile sizes) before they reach the sandbox
            check_snapshot(archive, self.settings.max_snapshot_entries, workspace_bytes)
            archive.seek(0)
            # streamed into tar's stdin: never whole in memory, never staged in the sandbox's /tmp
            result = client.exec(argv=RESTORE_COMMAND, stdin=archive, stdin_size=ref["size"], report_detached=False)
        if result.exit_code != 0:
            raise ValueError(f"restore failed: {result.stderr.decode(errors='replace')[-500:]}")
        payload = {"snapshot_id": st.restore_snapshot, "artifact": ref, "source_sandbox_id": None}
        self.p.emit(st.sandbox_id, [event(st, "snapshot.restored", payload, ACTOR)])

    def _snapshot_ref(self, tenant_id: str, snapshot_id: str) -> dict | None:
        """The tenant's live snapshot, as projected (its stream may be owned by another instance)."""
        query = sql.SQL(
            "SELECT artifact_id, key, sha256, size, content_type, name FROM {}.artifacts"
            " WHERE artifact_id = %s AND tenant_id = %s AND deleted_at IS NULL"
        )
        with connect(self.settings) as conn:
            return conn.execute(
                query.format(sql.Identifier(self.settings.projection_schema)), (snapshot_id, tenant_id)
            ).fetchone()

    def stop(self, st: SandboxState, effect: Effect) -> None:
        """Remove the sandbox, then ``sandbox.terminated``. If the provider fails (engine away, a
        timeout), the sandbox stays ``stopping``, the failure is recorded (a ``sandbox.stopping`` whose
        reason says so, once per distinct failure) and the periodic reconcile tries again."""
        current = self.p.state(st.sandbox_id) or st
        if current.state in ENDED:  # a retry that came after the stop it repeats
            return
        with self.p.removal(current.runtime_id) as mine:
            if not mine:  # another stop of it is under way
                return
            self.p.egress.close(st.sandbox_id, end_connections=True)
            try:
                self.provider.stop(current.runtime_id)
            except Exception as e:
                LOG.exception("stop of %s failed; the periodic reconcile retries it", st.sandbox_id)
                # the class only: an engine's message can name host paths
                why = f"stop failed ({type(e).__name__}); retried by the processor"
                if self._stop_failures.get(st.sandbox_id) != why:  # not one record per retry
                    stopping = lifecycle(st, "stopping", ACTOR, reason=why, provider=self.provider.name)
                    if self.p.settle(st.sandbox_id, lambda now: [stopping] if now.state == "stopping" else []):
                        self._stop_failures[st.sandbox_id] = why
                return
            self.p.pools.forget(current.runtime_id)
            self._stop_failures.pop(st.sandbox_id, None)
        done = lifecycle(st, "terminated", ACTOR, reason=effect.reason, provider=self.provider.name)
        self.p.settle(st.sandbox_id, lambda now: [done] if now.state not in ENDED else [])

    def egress(self, st: SandboxState, effect: Effect) -> None:
        """Reopen a live sandbox's egress proxy (a new owner of its partition serves it)."""
        try:
            self._open_egress(st, self.provider.handle(st.runtime_id))
        except ValueError:  # e.g. a platform upstream the operator has since removed
            LOG.exception("egress for %s not reopened", st.sandbox_id)

    def _open_egress(self, st: SandboxState, handle) -> None:
        if st.has_egress and handle is not None:
            rules = parse_rules(list(st.egress_allow))
            self.p.egress.serve(st.sandbox_id, handle.control_dir / "egress.sock", rules, st.platform_upstreams)

    def cancel(self, st: SandboxState, effect: Effect) -> None:
        command_id = effect.command.payload["command_id"] if effect.command else effect.reason
        handle = self.provider.handle(st.runtime_id)
        if handle:
            with contextlib.suppress(SupervisorError, SupervisorUnavailable, OSError):  # already finished, or gone
                handle.client.cancel(command_id)

    def resume(self, st: SandboxState, effect: Effect) -> None:
        """Run an accepted command that never started (its previous owner stopped first)."""
        command = self.p.read_command(st.stream_id, effect.pending.offset)
        if command is None or command.type != effect.pending.command_type:
            LOG.warning("accepted command %s not found at offset %d", effect.pending.command_id, effect.pending.offset)
            return self._close_unreadable(st, effect)
        kind = {
            "sandbox.exec": "exec",
            "sandbox.file.write": "write",
            "sandbox.file.read": "read",
            "sandbox.snapshot": "snapshot",
        }[command.type]
        getattr(self, kind)(st, Effect(kind, command))

    def _close_unreadable(self, st: SandboxState, effect: Effect) -> None:
        pending = effect.pending
        error = "interrupted: the accepted command could no longer be read"
        if pending.command_type == "sandbox.exec":
            payload = finished_payload(pending.command_id, None, 0.0, error=error)
            self.p.settle(st.sandbox_id, lambda now: finished(now, payload, ACTOR, None))
        elif pending.command_type == "sandbox.snapshot":
            payload = {"snapshot_id": pending.command_id, "error": f"failed: {error}"}
            self.p.settle(st.sandbox_id, lambda now: outcome(now, "snapshot.failed", payload, ACTOR, None))
        else:
            kind = "file.written" if pending.command_type.endswith("write") else "file.read"
            payload = {
                "request_id": pending.command_id,
                "path": "",
                "size": 0,
                "sha256": "",
                "content": None,
                "artifact": None,
                "error": error,
            }
            self.p.settle(st.sandbox_id, lambda now: outcome(now, kind, payload, ACTOR, None))

    # -- commands ---------------------------------------------------------------------------
    def exec(self, st: SandboxState, effect: Effect, prepared: "Prepared | None" = None) -> None:
        """Run an accepted command and record it; ``prepared``: what was got ready while its accept
        was acknowledged (``_prepare``)."""
        cmd = effect.command
        p = cmd.payload
        cid = p["command_id"]
        ready = self._wait_ready(st.sandbox_id)
        if ready is None:
            payload = finished_payload(cid, None, 0.0, error="sandbox is not running")
            self.p.settle(st.sandbox_id, lambda now: finished(now, payload, ACTOR, cmd))
            return
        argv = exec_argv(p)
        started_now = cid not in ready.running  # else it started with its accept (processor.handle)
        if started_now and not self.p.settle(st.sandbox_id, lambda now: started(now, cid, argv, p["cwd"], ACTOR, cmd)):
            # stopping meanwhile: never start it, close it (if the partition is still ours)
            payload = finished_payload(cid, None, 0.0, error="sandbox is not running")
            self.p.settle(st.sandbox_id, lambda now: finished(now, payload, ACTOR, cmd))
            return
        handle = prepared.handle if prepared else self.provider.handle(ready.runtime_id)
        check = prepared.take_check() if prepared else CommandCheck(self.guard, st.sandbox_id, cmd.actor)

        def run(on_output: Callable[[str, bytes], None]) -> SupervisorResult:
            if handle is None:
                raise SupervisorUnavailable("sandbox is gone")
            if not check.started:
                check.start(handle.client)  # others' leased files, as their holders left them
            if prepared and prepared.call:
                return prepared.call.run(on_output)
            # with egress the command gets a forwarder of its own: the proxy attributes by it
            return handle.client.exec(
                argv=argv,
                cwd=p["cwd"],
                env=p["env"],
                timeout_s=p["timeout_s"],
                request_id=cid,
                on_output=on_output,
                egress=ready.has_egress,
            )

        return self._record(st, cmd, cid, run, RecordedOutput(), check)

    def reattach(self, st: SandboxState, effect: Effect) -> None:
        """Read on a command the previous owner of the partition started (it goes on in the sandbox):
        its output from the byte offset the stream's records reach, then its exit, recorded as if this
        instance had run it from the start (``handoff.py``)."""
        pending = effect.pending
        cid = pending.command_id
        current = self.p.state(st.sandbox_id)
        if current is None or cid not in current.running or cid not in current.started_offsets:
            return  # finished or closed meanwhile
        cmd = self.p.read_command(st.stream_id, pending.offset)
        partition = self.p.partition_of(st.stream_id)
        so_far = recorded_output(
            self.settings, self.p.codec, partition, current.started_offsets[cid], st.sandbox_id, cid
        )
        handle = self.provider.handle(current.runtime_id)

        def run(on_output: Callable[[str, bytes], None]) -> SupervisorResult:
            if handle is None:
                raise SupervisorUnavailable("sandbox is gone")
            try:
                return handle.client.attach(cid, so_far.size, on_output)
            except SupervisorError as e:  # not_found; bad_request: a protocol 1 supervisor killed it
                if e.code not in ("not_found", "bad_request"):
                    raise
                raise SupervisorError("interrupted", f"{INTERRUPTED}; the sandbox does not have it") from e

        LOG.info("re-attaching to %s on %s from byte %d", cid, st.sandbox_id, so_far.size)
        return self._record(current, cmd, cid, run, so_far)

    def _record(
        self,
        st: SandboxState,
        cmd: Envelope | None,
        cid: str,
        run: Callable[[Callable[[str, bytes], None]], SupervisorResult],
        so_far: RecordedOutput,
        check: CommandCheck | None = None,
    ) -> object:
        """Run (or read on) a command, recording its output and, once it ended, its ``exec.finished``.
        Records nothing more once this instance has let the command go (``Detached``: returns
        DETACHED) or another host took it over (``taken_over``): the partition's owner records it.
        ``check``: the lease guard around it; what it found and put back is recorded with the end."""
        partition = self.p.partition_of(st.stream_id)
        epoch = self.p.ownership.epoch(partition)
        seq, recorded, truncated = so_far.next_seq, so_far.size, False
        overflow = spool()  # both streams, as produced, past MAX_RECORDED_OUTPUT (on disk past 1 MiB)
        overflow_limit = self.settings.max_output_bytes - MAX_RECORDED_OUTPUT

        def on_output(stream: str, data: bytes) -> None:
            nonlocal seq, recorded, truncated
            if recorded + len(data) > MAX_RECORDED_OUTPUT or overflow.tell():
                if overflow.tell() + len(data) > overflow_limit:
                    truncated = True
                else:
                    overflow.write(data)
                return
            recorded += len(data)
            payload = {"command_id": cid, "stream": stream, "seq": seq, "data": data, "artifact": None}
            self.p.record_output(event(st, "exec.output", payload, ACTOR, cmd), epoch)
            seq += 1

        try:
            result = run(on_output)
            done = finished_payload(
                cid,
                result.exit_code,
                result.duration_ms,
                timed_out=result.timed_out,
                cancelled=result.cancelled,
                truncated=truncated or result.lost > 0,  # lost: not kept by the supervisor while detached
            )
        except Detached:
            LOG.info("command %s on %s let go: its partition moved (the new owner re-attaches)", cid, st.sandbox_id)
            overflow.close()
            if check:
                check.drop()
            return DETACHED
        except (SupervisorError, SupervisorUnavailable, OSError) as e:
            if isinstance(e, SupervisorError) and e.code == "taken_over":
                LOG.info("command %s on %s taken over by another host", cid, st.sandbox_id)
                overflow.close()
                if check:
                    check.drop()
                return
            # the client's own messages name host paths (the control dir): the tenant gets the gist
            error = str(e) if isinstance(e, SupervisorError) else UNAVAILABLE
            LOG.warning("exec %s on %s: %s", cid, st.sandbox_id, e)
            result, done = None, finished_payload(cid, None, 0.0, error=error, truncated=truncated)
        except BaseException:  # unforeseen (the output's producer, a bug): the guard lets go of the command
            overflow.close()
            if check:
                check.drop()  # else its actor counts as running for good: its leased files go unguarded
            raise
        before = [  # what the command left running, as the supervisor saw it: it dies with the sandbox
            event(st, "exec.detached", {"command_id": cid, "pid": d.pid, "argv": d.argv}, ACTOR, cmd)
            for d in (result.detached if result else [])
        ]
        if check:
            before += self._violations(st, cmd, cid, check.finish(), done)
        ref = None
        with overflow:
            if overflow.tell() and self._within_artifact_quota(st.tenant_id, overflow.tell()):
                ref = self.artifacts.put_file(st.tenant_id, overflow, "text/plain", f"{cid}.output")
            elif overflow.tell():  # the tenant is at its artifact quota: the records' share is all it gets
                done["truncated"] = True
        if ref:
            payload = {"command_id": cid, "stream": "stdout", "seq": seq, "data": b"", "artifact": ref}
            before += [
                event(st, "artifact.stored", {"artifact": ref, "command_id": cid}, ACTOR, cmd),
                event(st, "exec.output", payload, ACTOR, cmd),
            ]
        ours = lambda: self.p.ownership.epoch(partition) == epoch  # noqa: E731 (the partition was not dropped meanwhile)
        self.p.settle(st.sandbox_id, lambda now: finished(now, done, ACTOR, cmd, before) if ours() else [])
        return None if ours() else DETACHED

    def _violations(
        self, st: SandboxState, cmd: Envelope | None, cid: str, found: list[Violation], done: dict
    ) -> list[Envelope]:
        """``lease.violated`` records for what the command did to others' leased files; its answer's
        ``error`` names each file and holder."""
        if not found:
            return []
        said = "lease_violated: " + "; ".join(v.message() for v in found)
        done["error"] = f"{done['error']}; {said}" if done.get("error") else said
        violator = cmd.actor if cmd else ""
        return [
            event(st, "lease.violated", {"path": v.path, "holder": v.holder, "violator": violator,
                                         "command_id": cid, "found": v.found, "restored": v.restored}, ACTOR, cmd)
            for v in found
        ]  # fmt: skip

    def _within_artifact_quota(self, tenant_id: str, size: int) -> bool:
        return within_artifact_quota(self.settings, tenant_id, size)

    def _file(self, st: SandboxState, effect: Effect, kind: str, work) -> None:
        cmd = effect.command
        p = cmd.payload
        payload = {
            "request_id": p["request_id"],
            "path": p["path"],
            "size": 0,
            "sha256": "",
            "content": None,
            "artifact": None,
            "error": None,
        }
        ready = self._wait_ready(st.sandbox_id)
        handle = None if ready is None else self.provider.handle(ready.runtime_id)
        if handle is None:
            payload["error"] = UNAVAILABLE
        else:
            try:
                payload.update(work(handle.client, p))
            except SupervisorUnavailable:
                payload["error"] = UNAVAILABLE
            except (SupervisorError, OSError) as e:
                payload["error"] = str(e)
        before = []
        if payload["artifact"] and kind == "file.read":  # listed and downloadable like any artifact
            stored = {"artifact": payload["artifact"], "command_id": None}
            before.append(event(st, "artifact.stored", stored, ACTOR, cmd))
        self.p.settle(st.sandbox_id, lambda now: outcome(now, kind, payload, ACTOR, cmd, before))

    def write(self, st: SandboxState, effect: Effect) -> None:
        def work(client, p):
            written = leases.canonical(p["path"])  # as leases name it; a holder's write of it is its own
            with self.guard.writing(client, st.sandbox_id, effect.command.actor, written):
                if p["artifact"] is None:
                    result = client.write(p["path"], p["content"] or b"", p["mode"])
                else:
                    with self.artifacts.get_file(p["artifact"]) as source:  # streamed from the store
                        result = client.write_file(p["path"], source, p["artifact"]["size"], p["mode"])
            return {"path": result["path"], "size": result["size"], "sha256": result["sha256"]}

        self._file(st, effect, "file.written", work)

    def read(self, st: SandboxState, effect: Effect) -> None:
        def work(client, p):
            with spool() as sink:
                result = client.read_into(p["path"], sink, self.settings.max_file_bytes)
                summary = {"size": result["size"], "sha256": result["sha256"]}
                if result["size"] > MAX_INLINE_BYTES:  # too big for a record: the bytes go to the artifact store
                    if not self._within_artifact_quota(st.tenant_id, result["size"]):
                        raise SupervisorError("quota_exceeded", "the tenant's artifact storage is full")
                    return {**summary, "artifact": self.artifacts.put_file(st.tenant_id, sink, name=p["path"])}
                sink.seek(0)
                return {**summary, "content": sink.read()}

        self._file(st, effect, "file.read", work)

    def snapshot(self, st: SandboxState, effect: Effect) -> None:
        """Stream the workspace archive into a spool (never whole in memory), capped in size; the
        outcome is always a record: snapshot.created or snapshot.failed."""
        cmd = effect.command
        snapshot_id = cmd.payload["snapshot_id"]
        limit = self.settings.max_snapshot_bytes
        stderr = bytearray()
        with spool() as archive:

            def collect(stream: str, data: bytes) -> None:
                if stream == "stderr":
                    stderr.extend(data[: 4096 - len(stderr)])
                elif archive.tell() + len(data) > limit:
                    raise SnapshotTooLarge(f"too_large: the workspace archive passed {limit} bytes")
                else:
                    archive.write(data)

            ready = self._wait_ready(st.sandbox_id)
            handle = self.provider.handle(ready.runtime_id) if ready else None
            try:
                if handle is None:
                    raise SupervisorUnavailable(UNAVAILABLE)
                # raising aborts the tar; survivors of the agent's commands are left for theirs to report
                result = handle.client.exec(argv=SNAPSHOT_COMMAND, on_output=collect, report_detached=False)
                if result.exit_code != 0:
                    raise ValueError(f"failed: tar exited {result.exit_code}: {stderr.decode(errors='replace')}")
                ref = self.artifacts.put_file(
                    st.tenant_id,
                    archive,
                    "application/gzip",
                    cmd.payload.get("name") or f"{snapshot_id}.tgz",
                    snapshot_id,
                )
            except (SnapshotTooLarge, ValueError, SupervisorError, SupervisorUnavailable, OSError) as e:
                if isinstance(e, SupervisorUnavailable):  # its message names host paths: the log keeps them
                    LOG.warning("snapshot %s of %s: %s", snapshot_id, st.sandbox_id, e)
                    e = SupervisorUnavailable(UNAVAILABLE)
                error = str(e) if str(e).startswith(("too_large:", "failed:", "unavailable:")) else f"failed: {e}"
                failed = {"snapshot_id": snapshot_id, "error": error}
                self.p.settle(st.sandbox_id, lambda now: outcome(now, "snapshot.failed", failed, ACTOR, cmd))
                return
        payload = {"snapshot_id": snapshot_id, "artifact": ref, "source_sandbox_id": st.sandbox_id}
        self.p.settle(st.sandbox_id, lambda now: outcome(now, "snapshot.created", payload, ACTOR, cmd))
