"""The sandbox processor: sandbox commands in, provider and supervisor calls, events out.

Runs on confluent-kafka rather than faust-streaming: faust-streaming 0.15.3 (aiokafka 0.14.0) never
completes its consumer-group join against Kafka 4.1 (stuck at "(Re-)joining group"), reproduced on
the local broker; the design allows this fallback. Delivery is at-least-once and every handler is
idempotent (command ids already seen in the sandbox's events are skipped; container names are
deterministic).

State is the fold of each sandbox's own events (``sandbox_state.evolve``). On start the processor
rebuilds it from the events topic, then **reconciles** with the provider: a sandbox nobody owns is
removed, a half-done provision is completed, a lost one is marked failed, and commands that were
running when the previous processor died are closed with an ``exec.finished`` saying so.
Long work (provision, exec, files) runs in a thread pool; the consume loop never waits on it.
"""

import contextlib
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError

from astraforge.artifacts import MAX_INLINE_BYTES, ArtifactStore, make_artifact_store, spool
from astraforge.config import Settings
from astraforge.errors import AstraForgeError, DecodeError
from astraforge.ids import new_id, now_micros
from astraforge.kafka import client_config, partitions_of, poll_batch, read_range, reader
from astraforge.processors.artifact_sweep import artifact_bytes, sweep
from astraforge.processors.lanes import TenantLanes
from astraforge.processors.sandbox_state import ENDED, Decision, Effect, SandboxState, decide, evolve, lifecycle, reap
from astraforge.producers.kafka import EventProducer
from astraforge.sandbox.client import SupervisorError, SupervisorUnavailable
from astraforge.sandbox.egress import EgressDecision, EgressProxy, parse_rules
from astraforge.sandbox.profile import SecurityProfile
from astraforge.sandbox.providers.base import SandboxProvider, SandboxSpec
from astraforge.sandbox.snapshots import RESTORE_COMMAND, SNAPSHOT_COMMAND, check_snapshot
from astraforge.schemas import Envelope

LOG = logging.getLogger(__name__)
ACTOR = "processor:sandboxes"
RELEVANT = ("sandbox.", "exec.started", "exec.finished", "file.", "snapshot.created")
LANED = ("read", "write", "snapshot")  # effects no quota counts: each tenant's wait in its lane (processors/lanes.py)
MAX_RECORDED_OUTPUT = 1024 * 1024  # per command, as exec.output records; the rest goes to one artifact


class SnapshotTooLarge(ValueError):
    """The workspace archive passed ``max_snapshot_bytes`` while it streamed out."""


SWEEP_INTERVAL_S = 3600  # the artifact retention sweep (processors/artifact_sweep.py)
UNAVAILABLE = "unavailable: the sandbox is not running or its supervisor does not answer"
WARM_ID = re.compile(r"^warm(\d+)-")  # warm<pool index>-<hex>


class SandboxProcessor:
    def __init__(
        self, settings: Settings, provider: SandboxProvider, artifacts: ArtifactStore | None = None, workers: int = 64
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.artifacts = artifacts or make_artifact_store(settings)
        self.snapshots: dict[str, tuple[str, dict]] = {}  # snapshot id -> (tenant, artifact ref)
        self.egress = EgressProxy.from_settings(settings, self._report_egress)
        self.warm_pools = settings.warm_pools
        self.warm: dict[int, list[str]] = {i: [] for i in range(len(self.warm_pools))}  # ready, unclaimed
        self._refilling = threading.Lock()
        self.producer = EventProducer(settings)
        self.codec = self.producer.codec
        self.states: dict[str, SandboxState] = {}
        self.lock = threading.RLock()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-effect")
        self.lanes = TenantLanes(self.pool, share=workers // 8)  # file and snapshot work, per tenant
        self.stop_event = threading.Event()
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": f"{settings.topic_prefix}-sandboxes",
                    # static membership: a restarted processor (even after kill -9) gets its partitions
                    # back at once instead of waiting out the dead member's session
                    "group.instance.id": f"sandboxes-{settings.instance_id}",
                    "session.timeout.ms": 10_000,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 5,
                },
            )
        )

    # -- state ------------------------------------------------------------------------------
    def emit(self, events: list[Envelope], wait: bool = True) -> None:
        """Append events, then fold them into the in-memory state. ``wait=False`` folds at once and
        lets a later waiting emit (same stream, same partition, in order) confirm delivery."""
        if not events:
            return
        if wait:
            self.producer.append_many(events)
        else:
            for e in events:
                self.producer.send(e)
            self.producer.poll(0)
        with self.lock:
            for e in events:
                self._fold(e)

    def _fold(self, e: Envelope) -> None:
        if e.type == "snapshot.created":
            self.snapshots[e.payload["snapshot_id"]] = (e.tenant_id, e.payload["artifact"])
        sid = e.sandbox_id or e.stream_id
        self.states[sid] = evolve(self.states.get(sid), e)

    def state(self, sandbox_id: str) -> SandboxState | None:
        with self.lock:
            return self.states.get(sandbox_id)

    def rebuild(self) -> None:
        """Fold every sandbox event in the log (the events topic is the source of truth)."""
        consumer = reader(self.settings)
        try:
            partitions = partitions_of(consumer, self.settings.events_topic, self.settings.kafka_timeout_s)
        finally:
            consumer.close()
        for partition in partitions:
            for msg in read_range(self.settings, self.settings.events_topic, partition, 0, None):
                try:
                    e = self.codec.decode(msg.value())
                except DecodeError:
                    continue
                if e.type.startswith(RELEVANT) and e.sandbox_id:
                    self._fold(e)

    def reconcile(self) -> None:
        present = self.provider.list_ids()
        with self.lock:
            states = dict(self.states)
        owned = {st.runtime_id for st in states.values() if st.state not in ENDED}
        for runtime_id in present - owned:
            pool = WARM_ID.match(runtime_id)
            if pool and int(pool[1]) in self.warm and self._healthy(runtime_id):
                self.warm[int(pool[1])].append(runtime_id)  # an unclaimed warm sandbox survives a restart
            else:
                LOG.warning("reaping orphan sandbox %s", runtime_id)
                self.provider.stop(runtime_id)
        for st in states.values():
            if st.state in ENDED:
                continue
            for command_id in st.running:
                self.emit([self._finished(st, command_id, None, 0.0, error="interrupted: the processor restarted")])
            if st.state == "provisioning":  # "requested": its create command is still to be consumed
                self.pool.submit(self._run, st.sandbox_id, Effect("provision", reason="reconcile"))
            elif st.state == "stopping":
                self.pool.submit(self._run, st.sandbox_id, Effect("stop", reason="stop"))
            elif st.state in ("ready", "busy") and st.runtime_id not in present:
                self.emit([lifecycle(st, "failed", ACTOR, reason="lost: the sandbox vanished while unobserved")])
            elif st.state in ("ready", "busy"):
                try:
                    self._open_egress(st, self.provider.handle(st.runtime_id))
                except ValueError:  # e.g. a platform upstream the operator has since removed
                    LOG.exception("egress for %s not reopened", st.sandbox_id)

    # -- egress -----------------------------------------------------------------------------
    def _open_egress(self, st: SandboxState, handle) -> None:
        if st.has_egress and handle is not None:
            rules = parse_rules(list(st.egress_allow))
            self.egress.serve(st.sandbox_id, handle.control_dir / "egress.sock", rules, st.platform_upstreams)

    def _report_egress(self, sandbox_id: str, d: EgressDecision) -> None:
        st = self.state(sandbox_id)
        if st is None:
            return
        payload = {"command_id": d.command_id, "host": d.host, "port": d.port, "method": d.method, "url": d.url,
                   "reason": d.reason, "credential_injected": d.credential_injected, "address": d.address,
                   "suppressed": d.suppressed}  # fmt: skip
        self.producer.send(self._event(st, "egress.allowed" if d.allowed else "egress.denied", payload, None))
        self.producer.poll(0)

    # -- the warm pool ----------------------------------------------------------------------
    def _healthy(self, runtime_id: str) -> bool:
        handle = self.provider.handle(runtime_id)
        try:
            return handle is not None and bool(handle.client.ping())
        except (SupervisorUnavailable, OSError):
            return False

    def refill(self) -> None:
        """Top every warm pool up to its size (one refill at a time; runs in the effect pool)."""
        if not self._refilling.acquire(blocking=False):
            return
        try:
            for index, pool in enumerate(self.warm_pools):
                while len(self.warm[index]) < pool.size and not self.stop_event.is_set():
                    runtime_id = f"warm{index}-{new_id().replace('-', '')}"
                    image = pool.image or self.settings.sandbox_image
                    self.provider.create(SandboxSpec(runtime_id, image=image, profile=SecurityProfile(**pool.profile)))
                    with self.lock:
                        self.warm[index].append(runtime_id)
        except Exception:
            LOG.exception("warm pool refill failed")
        finally:
            self._refilling.release()

    def _claim(self, st: SandboxState) -> str | None:
        """A warm sandbox from the pool of exactly this image and profile, if there is one."""
        if st.restore_snapshot or st.has_egress:
            return None
        for index, pool in enumerate(self.warm_pools):
            profile = {f"profile.{k}": str(v) for k, v in pool.profile.items()}
            if (pool.image or self.settings.sandbox_image) == st.image and profile == st.profile:
                with self.lock:
                    runtime_id = self.warm[index].pop(0) if self.warm[index] else None
                self.pool.submit(self.refill)
                return runtime_id
        return None

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        self.egress.start()
        self.rebuild()
        self.reconcile()
        self.pool.submit(self.refill)
        self.consumer.subscribe([self.settings.commands_topic])
        next_reap, next_sweep = 0.0, time.monotonic() + 60
        try:
            while not self.stop_event.is_set():
                messages = poll_batch(self.consumer, 100, timeout=0.1)
                for msg in messages:
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            LOG.warning("consumer error: %s", msg.error())
                        continue
                    self.handle(msg)
                if messages:
                    self.consumer.commit(asynchronous=True)
                if time.monotonic() >= next_reap:
                    self.reap_due()
                    next_reap = time.monotonic() + 1.0
                if time.monotonic() >= next_sweep:
                    self.pool.submit(self._sweep_artifacts)
                    next_sweep = time.monotonic() + SWEEP_INTERVAL_S
        finally:
            self.consumer.close()
            self.egress.stop()
            self.pool.shutdown(wait=False, cancel_futures=True)
            with self._refilling:  # a refill under way finishes its one create: nothing appears after we return
                pass
            self.producer.close()

    def stop(self) -> None:
        self.stop_event.set()

    def handle(self, msg) -> None:
        try:
            command = self.codec.decode(msg.value())
        except DecodeError as e:
            self.producer.dead_letter(msg, str(e), "processor-sandboxes")
            return
        if not command.type.startswith("sandbox."):
            return
        sandbox_id = command.sandbox_id or command.stream_id
        try:
            self.apply(sandbox_id, decide(self.state(sandbox_id), command, ACTOR))
        except (ValueError, KeyError, TypeError) as e:  # a command we cannot act on: set it aside, go on
            LOG.exception("command %s on %s failed", command.type, sandbox_id)
            self.producer.dead_letter(msg, f"{type(e).__name__}: {e}", "processor-sandboxes")

    def apply(self, sandbox_id: str, decision: Decision) -> None:
        if decision.state is not None:
            with self.lock:
                self.states.setdefault(sandbox_id, decision.state)
        self.emit(decision.events)
        for effect in decision.effects:
            if effect.kind in LANED:
                st = self.state(sandbox_id)
                self.lanes.submit(st.tenant_id if st else "", self._run, sandbox_id, effect)
            else:
                self.pool.submit(self._run, sandbox_id, effect)

    def reap_due(self) -> None:
        now = now_micros()
        with self.lock:
            states = list(self.states.values())
        for st in states:
            self.apply(st.sandbox_id, reap(st, now, ACTOR))

    def _sweep_artifacts(self) -> None:
        try:
            result = sweep(self.settings, self.artifacts, self.producer, datetime.now(UTC))
            if result.expired or result.removed_keys:
                LOG.info("artifact sweep: %d expired, %d keys removed", result.expired, result.removed_keys)
        except Exception:  # the next sweep retries; nothing is lost by a failed one
            LOG.exception("artifact sweep failed")

    # -- effects ----------------------------------------------------------------------------
    def _run(self, sandbox_id: str, effect: Effect) -> None:
        st = self.state(sandbox_id)
        if st is None:
            return
        try:
            getattr(self, f"_{effect.kind}")(st, effect)
        except Exception:  # an effect must never kill the processor; the failure is recorded
            LOG.exception("effect %s on %s failed", effect.kind, sandbox_id)

    def _provision(self, st: SandboxState, effect: Effect) -> None:
        runtime_id = self._claim(st) if effect.reason != "reconcile" else None
        details = {"provider_id": runtime_id, "warm_pool": "hit"} if runtime_id else {"warm_pool": "miss"}
        runtime_id = runtime_id or st.sandbox_id
        try:
            if st.image not in self.settings.allowed_images:  # a record from before the API checked it
                raise ValueError(f"image {st.image} is not allowed")
            if details["warm_pool"] == "miss":
                profile = SecurityProfile.with_overrides({k.removeprefix("profile."): v for k, v in st.profile.items()})
                handle = self.provider.create(SandboxSpec(runtime_id, image=st.image, profile=profile))
                if st.restore_snapshot:
                    self._restore(st, handle.client, profile.workspace_mb * 1024 * 1024)
                self._open_egress(st, handle)
        except Exception as e:
            self.provider.stop(runtime_id)  # roll back whatever half exists
            self.emit([lifecycle(st, "failed", ACTOR, reason=f"provision failed: {e}", provider=self.provider.name)])
            return
        if self.state(st.sandbox_id).state in ("requested", "provisioning"):
            self.emit([lifecycle(st, "ready", ACTOR, provider=self.provider.name, image=st.image, details=details)])
        else:  # stopped while provisioning
            self.provider.stop(runtime_id)

    def _restore(self, st: SandboxState, client, workspace_bytes: int) -> None:
        owner, ref = self.snapshots.get(st.restore_snapshot, (None, None))
        if owner != st.tenant_id:
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
        self.emit([self._event(st, "snapshot.restored", payload, None)])

    def _snapshot(self, st: SandboxState, effect: Effect) -> None:
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

            handle = self.provider.handle(st.runtime_id) if self._wait_ready(st.sandbox_id) else None
            try:
                if handle is None:
                    raise SupervisorUnavailable(UNAVAILABLE)
                # raising aborts the tar; survivors of the agent's commands are left for theirs to report
                result = handle.client.exec(argv=SNAPSHOT_COMMAND, on_output=collect, report_detached=False)
                if result.exit_code != 0:
                    raise ValueError(f"failed: tar exited {result.exit_code}: {stderr.decode(errors='replace')}")
                ref = self.artifacts.put_file(st.tenant_id, archive, "application/gzip",
                                              cmd.payload.get("name") or f"{snapshot_id}.tgz", snapshot_id)  # fmt: skip
            except (SnapshotTooLarge, ValueError, SupervisorError, SupervisorUnavailable, OSError) as e:
                if isinstance(e, SupervisorUnavailable):  # its message names host paths: the log keeps them
                    LOG.warning("snapshot %s of %s: %s", snapshot_id, st.sandbox_id, e)
                    e = SupervisorUnavailable(UNAVAILABLE)
                error = str(e) if str(e).startswith(("too_large:", "failed:", "unavailable:")) else f"failed: {e}"
                self.emit([self._event(st, "snapshot.failed", {"snapshot_id": snapshot_id, "error": error}, cmd)])
                return
        payload = {"snapshot_id": snapshot_id, "artifact": ref, "source_sandbox_id": st.sandbox_id}
        self.emit([self._event(st, "snapshot.created", payload, cmd)])

    def _stop(self, st: SandboxState, effect: Effect) -> None:
        self.egress.close(st.sandbox_id)
        self.provider.stop(self.state(st.sandbox_id).runtime_id)
        self.emit([lifecycle(st, "terminated", ACTOR, reason=effect.reason, provider=self.provider.name)])

    def _wait_ready(self, sandbox_id: str, timeout: float = 60) -> SandboxState | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.state(sandbox_id)
            if st is None or st.state in ENDED or st.state == "stopping":
                return None
            if st.state in ("ready", "busy"):
                return st
            time.sleep(0.01)
        return None

    def _finished(self, st, command_id, exit_code, duration_ms, cause=None, **flags) -> Envelope:
        payload = {"command_id": command_id, "exit_code": exit_code, "duration_ms": duration_ms, "timed_out": False,
                   "cancelled": False, "truncated": False, "error": None, **flags}  # fmt: skip
        return self._event(st, "exec.finished", payload, cause)

    def _event(self, st: SandboxState, type_: str, payload: dict, cause: Envelope | None) -> Envelope:
        return Envelope(
            type=type_, stream_id=st.stream_id, tenant_id=st.tenant_id, actor=ACTOR, sandbox_id=st.sandbox_id,
            causation_id=cause.event_id if cause else None, correlation_id=cause.correlation_id if cause else None,
            payload=payload,
        )  # fmt: skip

    def _exec(self, st: SandboxState, effect: Effect) -> None:
        cmd = effect.command
        p = cmd.payload
        cid = p["command_id"]
        ready = self._wait_ready(st.sandbox_id)
        if ready is None:
            self.emit([self._finished(st, cid, None, 0.0, cmd, error="sandbox is not running")])
            return
        argv = p["argv"] or ["/bin/sh", "-c", p["shell"] or ""]
        started = [
            self._event(st, "exec.started", {"command_id": cid, "argv": argv, "cwd": p["cwd"], "pid": None}, cmd)
        ]
        with self.lock:
            if not self.states[st.sandbox_id].running:
                started.append(lifecycle(st, "busy", ACTOR, cmd))
        self.emit(started, wait=False)  # ordered by the idempotent producer; exec.finished waits for all
        seq, recorded, truncated = 0, 0, False
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
            self.producer.send(self._event(st, "exec.output", payload, cmd))
            seq += 1

        client = self.provider.handle(ready.runtime_id)
        try:
            if client is None:
                raise SupervisorUnavailable("sandbox is gone")
            # with egress the command gets a forwarder of its own: the proxy attributes by it
            result = client.client.exec(argv=argv, cwd=p["cwd"], env=p["env"], timeout_s=p["timeout_s"], request_id=cid,
                                        on_output=on_output, egress=ready.has_egress)  # fmt: skip
            done = self._finished(st, cid, result.exit_code, result.duration_ms, cmd, timed_out=result.timed_out,
                                  cancelled=result.cancelled, truncated=truncated)  # fmt: skip
        except (SupervisorError, SupervisorUnavailable, OSError) as e:
            # the client's own messages name host paths (the control dir): the tenant gets the gist
            error = str(e) if isinstance(e, SupervisorError) else UNAVAILABLE
            LOG.warning("exec %s on %s: %s", cid, st.sandbox_id, e)
            result, done = None, self._finished(st, cid, None, 0.0, cmd, error=error, truncated=truncated)
        events = [  # what the command left running, as the supervisor saw it: it dies with the sandbox
            self._event(st, "exec.detached", {"command_id": cid, "pid": d.pid, "argv": d.argv}, cmd)
            for d in (result.detached if result else [])
        ]
        ref = None
        with overflow:
            if overflow.tell() and self._within_artifact_quota(st.tenant_id, overflow.tell()):
                ref = self.artifacts.put_file(st.tenant_id, overflow, "text/plain", f"{cid}.output")
            elif overflow.tell():  # the tenant is at its artifact quota: the records' share is all it gets
                done.payload["truncated"] = True
        if ref:
            payload = {"command_id": cid, "stream": "stdout", "seq": seq, "data": b"", "artifact": ref}
            events += [self._event(st, "artifact.stored", {"artifact": ref, "command_id": cid}, cmd),
                       self._event(st, "exec.output", payload, cmd)]  # fmt: skip
        events.append(done)
        with self.lock:
            current = self.states[st.sandbox_id]
            if current.running == {cid} and current.state == "busy":
                events.append(lifecycle(st, "ready", ACTOR, cmd))
        self.emit(events)

    def _within_artifact_quota(self, tenant_id: str, size: int) -> bool:
        try:
            return artifact_bytes(self.settings, tenant_id) + size <= self.settings.quota_artifact_bytes
        except AstraForgeError:  # the projection is unreachable: store it (bounded by max_output_bytes)
            LOG.warning("artifact quota of %s unknown; storing %d bytes of output", tenant_id, size)
            return True

    def _cancel(self, st: SandboxState, effect: Effect) -> None:
        handle = self.provider.handle(st.runtime_id)
        if handle:
            with contextlib.suppress(SupervisorError):  # already finished
                handle.client.cancel(effect.command.payload["command_id"])

    def _file(self, st: SandboxState, effect: Effect, kind: str, work) -> None:
        cmd = effect.command
        p = cmd.payload
        payload = {"request_id": p["request_id"], "path": p["path"], "size": 0, "sha256": "", "content": None,
                   "artifact": None, "error": None}  # fmt: skip
        handle = (
            None
            if self._wait_ready(st.sandbox_id) is None
            else self.provider.handle(self.state(st.sandbox_id).runtime_id)
        )
        if handle is None:
            payload["error"] = UNAVAILABLE
        else:
            try:
                payload.update(work(handle.client, p))
            except SupervisorUnavailable:
                payload["error"] = UNAVAILABLE
            except (SupervisorError, OSError) as e:
                payload["error"] = str(e)
        events = [self._event(st, kind, payload, cmd)]
        if payload["artifact"] and kind == "file.read":  # listed and downloadable like any artifact
            events.insert(
                0, self._event(st, "artifact.stored", {"artifact": payload["artifact"], "command_id": None}, cmd)
            )
        self.emit(events)

    def _write(self, st: SandboxState, effect: Effect) -> None:
        def work(client, p):
            if p["artifact"] is None:
                result = client.write(p["path"], p["content"] or b"", p["mode"])
            else:
                with self.artifacts.get_file(p["artifact"]) as source:  # streamed from the store
                    result = client.write_file(p["path"], source, p["artifact"]["size"], p["mode"])
            return {"path": result["path"], "size": result["size"], "sha256": result["sha256"]}

        self._file(st, effect, "file.written", work)

    def _read(self, st: SandboxState, effect: Effect) -> None:
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
