"""A deepagents sandbox backend that goes through the recorded sandbox path.

``RecordedSandbox`` subclasses deepagents' ``BaseSandbox``: its three primitives (``execute``,
``upload_files``, ``download_files``) append ``sandbox.exec`` / ``sandbox.file.write`` /
``sandbox.file.read`` commands to the sandbox's stream, as the conversation (``actor``), and wait for
the sandbox processor's answer records; read, ls, grep, glob and edit are deepagents' own, built on
them. So every file write and command an agent makes is a command record naming the conversation
and a fact the sandbox processor observed (``exec.accepted`` carries ``requested_by``).

On a shared sandbox, ``write`` and ``edit`` first take the file's lease (``astraforge.leases``):
another holder's lease turns the write into an error naming the holder, which the agent sees.

Context offloading: an ``execute`` output above ``offload_bytes`` is stored whole in the artifact
store and written into the sandbox (``/tmp/astraforge-outputs/<command>.txt``); the agent gets the
path, the size and the first and last lines, and reads the rest with ``read_file`` when it needs to.
``offloads`` remembers each (path -> artifact) until ``take_offload`` hands it to the reply's
``tool.result`` of that very call, which references it.

When the toolkit's HTTP ``SandboxBackend`` lands, this is the same contract over the commands topic
instead of the API (the processor holds no tenant API key).
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import TopicPartition
from deepagents.backends.protocol import (
    EditResult,
    ExecuteResponse,
    FileDownloadResponse,
    FileUploadResponse,
    WriteResult,
)
from deepagents.backends.sandbox import BaseSandbox

from astraforge import leases
from astraforge.artifacts import MAX_INLINE_BYTES, ArtifactStore, spool
from astraforge.config import Settings
from astraforge.db import connect
from astraforge.errors import AstraForgeError, DecodeError
from astraforge.ids import new_id
from astraforge.kafka import partition_for, poll_batch, reader
from astraforge.processors.artifact_sweep import within_artifact_quota
from astraforge.processors.runs.facts import FactTimeout, RunCancelled
from astraforge.schemas import Envelope, default_codec

LOG = logging.getLogger(__name__)
COMMAND_TIMEOUT_S = 600
ANSWER_GRACE_S = 60.0  # past a command's own timeout, how long to wait for its answer record
OUTPUT_DIR = "/tmp/astraforge-outputs"
PREVIEW_BYTES = 2048  # of the head and of the tail of an offloaded output
QUOTA_EXCEEDED = "quota_exceeded: the tenant's artifact storage is full"
ERROR_CODES = {"not_found": "file_not_found", "forbidden_path": "permission_denied", "is_directory": "is_directory"}


def stored(ref: dict) -> dict:
    """The ``artifact.stored`` payload for bytes stored on the tenant's behalf (readable, listed,
    counted against its quota and deletable once projected, like the sandbox processor's own)."""
    return {"artifact": ref, "command_id": None}


@dataclass(frozen=True)
class Offload:
    """A tool output kept out of the model's context: whole in the artifact store and in the sandbox."""

    path: str
    artifact: dict
    size: int
    header: str  # the summary's first line, naming the path: the output the agent got starts with it


class RecordedSandbox(BaseSandbox):
    """One conversation's view of its sandbox for one reply (not shared between threads' replies)."""

    def __init__(
        self,
        settings: Settings,
        artifacts: ArtifactStore,
        append: Callable[[list[Envelope]], None],
        tenant_id: str,
        sandbox_id: str,
        actor: str,
        stopped: Callable[[], bool],
        offload_bytes: int,
        lease_ttl_s: float = leases.DEFAULT_TTL_S,
    ) -> None:
        self.settings = settings
        self.artifacts = artifacts
        self.append = append
        self.tenant_id = tenant_id
        self.sandbox_id = sandbox_id
        self.actor = actor
        self.stopped = stopped
        self.offload_bytes = offload_bytes
        self.lease_ttl_s = lease_ttl_s
        self.offloads: dict[str, Offload] = {}
        self.leased: set[str] = set()
        self.lease_records: list[Envelope] = []  # lease.acquired / lease.refused, appended to the sandbox's stream
        self._offloads_lock = threading.Lock()
        self._answers = CommandAnswers(settings, sandbox_id, end_offset(settings, sandbox_id), stopped)

    @property
    def id(self) -> str:
        return self.sandbox_id

    # -- the recorded primitives ----------------------------------------------------------------
    def _command(self, type_: str, payload: dict, answers: tuple[str, ...], key: str, timeout: float) -> list[Envelope]:
        """Append one sandbox command as the conversation; the records answering it (final last)."""
        ident = payload[key]
        record = Envelope(
            type=type_,
            stream_id=self.sandbox_id,
            tenant_id=self.tenant_id,
            actor=self.actor,
            sandbox_id=self.sandbox_id,
            payload=payload,
        )
        self._answers.expect(ident)
        try:
            self.append([record])
            return self._answers.wait(ident, key, answers, timeout)
        finally:
            self._answers.forget(ident)

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        cid = f"{self.actor.split(':', 1)[-1]}-{new_id().replace('-', '')[-16:]}"
        limit = timeout or COMMAND_TIMEOUT_S
        payload = {
            "command_id": cid,
            "argv": [],
            "shell": command,
            "cwd": "/workspace",
            "env": {},
            "timeout_s": float(limit),
            "async_": False,
        }
        try:
            records = self._command("sandbox.exec", payload, ("exec.output", "exec.finished"), "command_id", limit + 60)
        except AstraForgeError as e:
            return ExecuteResponse(output=f"error: {e}", exit_code=None)
        *outputs, finished = records
        done = finished.payload
        with spool() as whole:
            for e in outputs:
                whole.write(e.payload["data"])
                if e.payload.get("artifact"):  # the part past the sandbox processor's recorded share
                    for chunk in self.artifacts.iter_chunks(e.payload["artifact"]):
                        whole.write(chunk)
            size = whole.tell()
            if done.get("error") and not size:
                return ExecuteResponse(output=f"error: {done['error']}", exit_code=done.get("exit_code"))
            if size > self.offload_bytes:
                return self._offload(cid, whole, size, done)
            whole.seek(0)
            text = whole.read().decode(errors="replace")
        if (done.get("error") or "").startswith("lease_violated"):  # what it did to others' files was undone
            text += f"\n[error: {done['error']}]"
        return ExecuteResponse(output=text, exit_code=done.get("exit_code"), truncated=bool(done.get("truncated")))

    def has_room(self, size: int) -> bool:
        """Room for ``size`` more bytes of the tenant's artifacts (checked before anything is stored)."""
        return within_artifact_quota(self.settings, self.tenant_id, size)

    def _offload(self, cid: str, whole, size: int, done: dict) -> ExecuteResponse:
        """Keep a large output out of the model's context: stored, written into the sandbox, previewed.
        Past the tenant's artifact quota nothing is stored: the agent gets an error and the preview."""
        if not self.has_room(size):
            head, tail = _preview(whole, size)
            error = (
                f"error: quota_exceeded: the output ({size} bytes, exit code {done.get('exit_code')}) was not kept: "
                f"the tenant's artifact storage is full; only its first and last lines follow]"
            )
            return ExecuteResponse(output=f"[{error}\n{head}\n[...]\n{tail}", exit_code=done.get("exit_code"),
                                   truncated=True)  # fmt: skip
        ref = self.artifacts.put_file(self.tenant_id, whole, "text/plain", f"{cid}.txt")
        self.append([self._sandbox_record("artifact.stored", stored(ref))])
        path = f"{OUTPUT_DIR}/{cid}.txt"
        write = {"request_id": f"{cid}-offload", "path": path, "content": None, "artifact": ref, "mode": 0o644}
        written = self._command("sandbox.file.write", write, ("file.written",), "request_id", ANSWER_GRACE_S)[-1]
        head, tail = _preview(whole, size)
        where = path if not written.payload.get("error") else f"artifact {ref['artifact_id']} (not in the sandbox)"
        header = (
            f"[output offloaded: {size} bytes, exit code {done.get('exit_code')}; the whole output is at {where} "
            f"(read it with read_file, in pages); first and last lines:]"
        )
        with self._offloads_lock:
            self.offloads[path] = Offload(path, ref, size, header)
        summary = f"{header}\n{head}\n[...]\n{tail}"
        return ExecuteResponse(output=summary, exit_code=done.get("exit_code"), truncated=False)

    def take_offload(self, output: str) -> Offload | None:
        """The offload whose summary ``output`` is (a tool's whole answer starts with it), claimed once:
        a later output that merely names the path (``find``, an error about it) is not that offload."""
        with self._offloads_lock:
            found = next((o for o in self.offloads.values() if output.startswith(o.header)), None)
            if found is not None:
                del self.offloads[found.path]
            return found

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        answers = []
        for path, content in files:
            rid = f"{self.actor.split(':', 1)[-1]}-w-{new_id().replace('-', '')[-16:]}"
            artifact = None
            if len(content) > MAX_INLINE_BYTES:
                if not self.has_room(len(content)):
                    answers.append(FileUploadResponse(path=path, error=QUOTA_EXCEEDED))
                    continue
                artifact = self.artifacts.put(self.tenant_id, content, name=path)
                self.append([self._sandbox_record("artifact.stored", stored(artifact))])
            write = {
                "request_id": rid,
                "path": path,
                "content": None if artifact else content,
                "artifact": artifact,
                "mode": 0o644,
            }
            try:
                done = self._command("sandbox.file.write", write, ("file.written",), "request_id", ANSWER_GRACE_S)[-1]
                error = done.payload.get("error")
            except AstraForgeError as e:
                error = str(e)
            answers.append(FileUploadResponse(path=path, error=_file_error(error)))
        return answers

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        answers = []
        for path in paths:
            rid = f"{self.actor.split(':', 1)[-1]}-r-{new_id().replace('-', '')[-16:]}"
            try:
                done = self._command(
                    "sandbox.file.read", {"request_id": rid, "path": path}, ("file.read",), "request_id", ANSWER_GRACE_S
                )[-1]
            except AstraForgeError as e:
                answers.append(FileDownloadResponse(path=path, content=None, error=str(e)))
                continue
            p = done.payload
            if p.get("error"):
                answers.append(FileDownloadResponse(path=path, content=None, error=_file_error(p["error"])))
            elif p.get("artifact"):
                answers.append(FileDownloadResponse(path=path, content=self.artifacts.get(p["artifact"]), error=None))
            else:
                answers.append(FileDownloadResponse(path=path, content=p.get("content") or b"", error=None))
        return answers

    # -- leases: the blackboard ----------------------------------------------------------------
    def lease(self, path: str) -> str | None:
        """Take (or extend) this conversation's lease on ``path``; the refusal to show the agent, or None."""
        try:
            with connect(self.settings) as conn:
                outcome = leases.acquire(conn, self.tenant_id, self.sandbox_id, path, self.actor, self.lease_ttl_s)
        except leases.TooManyLeases as e:
            return str(e)
        record_type = "lease.acquired" if outcome.granted else "lease.refused"
        path = outcome.lease.path  # the canonical spelling the lease is keyed by
        first = outcome.granted and path not in self.leased
        if first or not outcome.granted:
            payload = {
                "path": path,
                "holder": outcome.lease.holder,
                "expires_at": outcome.lease.expires_micros,
                "requested_by": self.actor,
            }
            self.append([self._sandbox_record(record_type, payload)])
        if outcome.granted:
            self.leased.add(path)
            return None
        return outcome.refusal()

    def release_leases(self) -> None:
        """Give up every lease this conversation holds here (its reply ended)."""
        if not self.leased:
            return
        try:
            with connect(self.settings) as conn:
                released = leases.release_all(conn, self.sandbox_id, self.actor)
        except AstraForgeError:
            LOG.warning("could not release %s's leases; they expire on their own", self.actor)
            return
        records = [
            self._sandbox_record(
                "lease.released", {"path": p, "holder": self.actor, "expires_at": 0, "requested_by": self.actor}
            )
            for p in released
        ]
        if records:
            self.append(records)
        self.leased.clear()

    def _sandbox_record(self, type_: str, payload: dict) -> Envelope:
        return Envelope(
            type=type_,
            stream_id=self.sandbox_id,
            tenant_id=self.tenant_id,
            actor=self.actor,
            sandbox_id=self.sandbox_id,
            payload=payload,
        )

    def write(self, file_path: str, content: str) -> WriteResult:
        refused = self.lease(file_path)
        if refused:
            return WriteResult(error=refused)
        return super().write(file_path, content)

    def edit(self, file_path: str, old_string: str, new_string: str, replace_all: bool = False) -> EditResult:
        refused = self.lease(file_path)
        if refused:
            return EditResult(error=refused)
        return super().edit(file_path, old_string, new_string, replace_all)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._answers.close()


class CommandAnswers:
    """The answers to the commands one backend sends, read from the sandbox's partition once, from
    where it ended when the backend was made. Only records that name a command the backend waits
    for (``expect``) are kept, by id; everything else (other agents' output, other streams) passes
    by: a reply's life costs one pass over what the partition receives, never a rescan."""

    def __init__(self, settings: Settings, sandbox_id: str, start: int, stopped: Callable[[], bool]) -> None:
        self.sandbox_id = sandbox_id
        self.key = sandbox_id.encode()
        self.stopped = stopped
        self.codec = default_codec()
        self.consumer = reader(settings, **{"enable.partition.eof": False})
        partition = partition_for(sandbox_id, settings.topic_partitions)
        self.consumer.assign([TopicPartition(settings.events_topic, partition, start)])
        self.kept: dict[str, list[Envelope]] = {}  # command or request id -> its answers so far
        self.ids = threading.Lock()
        self.reading = threading.Lock()  # one poll at a time (the consumer is not thread-safe)

    def expect(self, ident: str) -> None:
        """Keep the answers naming ``ident`` (before its command is appended)."""
        with self.ids:
            self.kept.setdefault(ident, [])

    def forget(self, ident: str) -> None:
        with self.ids:
            self.kept.pop(ident, None)

    def wait(self, ident: str, key: str, answers: tuple[str, ...], timeout: float) -> list[Envelope]:
        """The answers of types ``answers`` naming ``ident`` (under ``key``), once the last type came."""
        deadline = time.monotonic() + timeout
        final = answers[-1]
        while True:
            with self.ids:
                mine = [e for e in self.kept.get(ident, []) if e.type in answers and e.payload.get(key) == ident]
            if mine and mine[-1].type == final:
                return mine
            if self.stopped():
                raise RunCancelled("the reply was stopped")
            if time.monotonic() > deadline:
                raise FactTimeout(f"no answer within {timeout:.0f}s")
            with self.reading:  # deepagents runs a turn's tool calls on a thread pool: they take turns
                self._poll(0.2)

    def _poll(self, timeout: float) -> None:
        for msg in poll_batch(self.consumer, 500, timeout=timeout):
            if msg.error() or msg.key() != self.key:
                continue
            try:
                e = self.codec.decode(msg.value())
            except DecodeError:
                continue
            ident = e.payload.get("command_id") or e.payload.get("request_id") if isinstance(e.payload, dict) else None
            with self.ids:
                if ident in self.kept:
                    self.kept[ident].append(e)

    def close(self) -> None:
        self.consumer.close()


def end_offset(settings: Settings, stream_id: str) -> int:
    """Where the sandbox's partition of the events topic ends now: answers to commands sent from here
    on come after it."""
    consumer = reader(settings)
    try:
        partition = partition_for(stream_id, settings.topic_partitions)
        _, high = consumer.get_watermark_offsets(
            TopicPartition(settings.events_topic, partition), timeout=settings.kafka_timeout_s
        )
        return high
    finally:
        consumer.close()


def _preview(whole, size: int) -> tuple[str, str]:
    """The first and last ``PREVIEW_BYTES`` of an output (the tail never repeats the head)."""
    whole.seek(0)
    head = whole.read(PREVIEW_BYTES).decode(errors="replace")
    whole.seek(max(PREVIEW_BYTES, size - PREVIEW_BYTES))
    return head, whole.read().decode(errors="replace")


def _file_error(error: str | None) -> str | None:
    if not error:
        return None
    return ERROR_CODES.get(error.partition(":")[0], error)
