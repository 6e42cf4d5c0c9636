"""The conversation processor: hosted DeepAgent conversations on the processor runtime.

Shaped like the run orchestrator (``processors/runs/orchestrator.py``): every instance joins the
``conversations`` consumer group of the commands topic and acts only on conversations of the
partitions it owns. Per-conversation state (``state.ConversationState``: settings, todos, the reply
under way, the messages waiting, the newest checkpoint and the offsets of the records after it) is
compact whatever the conversation's length; it lives in memory for the owned partitions and in a
changelog-backed faust table (key = conversation id, plus a ``@<partition>`` mark: the events-topic
offset folded so far). The history itself is not in the table: it is the newest checkpoint
(``checkpoints``, incremental in the artifact store) plus the records at the state's ``tail``, kept
in memory while a reply runs or a message waits (``history``), given back when the conversation
idles. A new owner loads the table, folds the records after the mark and resumes every reply under
way, rebuilding the histories it needs.

Durable accept: ``conversation.created`` and the user's ``chat.message`` are acknowledged by Kafka
before the command's offset commits. Replies run on threads of their own (one per conversation at a
time, the oldest waiting message first), so a ``reply.cancel`` is never queued behind a reply: it
writes ``reply.cancelled`` at once, and the reply's thread, whose every write checks that its reply
is still current, stops at its next token or step.

Crash (kill -9) mid-reply: the next owner finds the reply in the records and continues it from
them. A tool call recorded as called without a result is never run again: it gets a ``tool.result``
saying it was interrupted (its effect, if it had one, is in the sandbox's records), and the model
goes on from there. Model tokens of the interrupted turn are streamed again (the final
``chat.message`` of each turn is what counts). Each reply ends ``reply.completed``, or
``reply.failed`` with the reason.

Not provided: a sandbox command of a cancelled reply runs to its end (its result is dropped).
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable

from astraforge.artifacts import ArtifactStore, make_artifact_store
from astraforge.config import Settings
from astraforge.errors import AstraForgeError, DecodeError
from astraforge.kafka import read_range
from astraforge.processors.artifact_sweep import within_artifact_quota
from astraforge.processors.conversations import checkpoints
from astraforge.processors.conversations.agent import ReplyRun, ReplyStopped, chat_model
from astraforge.processors.conversations.backend import RecordedSandbox, stored
from astraforge.processors.conversations.state import (
    ConversationState,
    History,
    decide,
    event,
    fold,
    interrupted,
    next_reply,
    reply_record,
)
from astraforge.processors.ownership import Ownership
from astraforge.processors.runtime import Runtime, Source, append_durably, dead_letter
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope, default_codec

LOG = logging.getLogger(__name__)
NAME = "conversations"
ACTOR = "processor:conversations"
COMMANDS = frozenset({"conversation.create", "chat.post", "reply.cancel"})
UNPERSISTED = frozenset({"chat.delta"})  # change no state: the table is not rewritten per token
CHECKPOINT_TRIES = 3  # a checkpoint that a user message overtook is written again (then left to the next step)


class ConversationProcessor:
    def __init__(self, settings: Settings, artifacts: ArtifactStore | None = None) -> None:
        self.settings = settings
        self.codec = default_codec()
        self.producer = EventProducer(settings)
        self.artifacts = artifacts or make_artifact_store(settings)
        self.stop_event = threading.Event()
        self.states: dict[str, ConversationState] = {}
        # the histories in memory (rebuilt on demand from the newest checkpoint and the state's tail)
        self.histories: dict[str, History] = {}
        self.segments: dict[str, list[checkpoints.Segment]] = {}  # the newest checkpoint's, per conversation
        self.ownership = Ownership()
        self.replies: dict[str, threading.Thread] = {}
        self._kicking = threading.Lock()
        self.runtime = Runtime(settings, NAME, settings.commands_topic)
        self.table = self.runtime.table(NAME)
        self.runtime.on_revoked(self._suspend)
        self.runtime.on_assigned(self._assigned)
        self.runtime.app.agent(self.runtime.topic, name=f"{NAME}-commands")(self._consume)

    # -- state ------------------------------------------------------------------------------
    def state(self, conversation_id: str) -> ConversationState | None:
        return self.states.get(conversation_id)

    def partition_of(self, stream_id: str) -> int:
        return self.runtime.partition(stream_id)

    def owns(self, stream_id: str) -> bool:
        return self.ownership.owns(self.partition_of(stream_id))

    def _fold(self, e: Envelope, offset: int) -> str:
        cid = e.stream_id
        before = self.states.get(cid)
        new, history = fold(before, self.histories.get(cid), e, offset)
        if new is not None:
            self.states[cid] = new
            if before is None:  # a new conversation: its history is known (empty)
                self.histories[cid] = History()
            elif history is not None:
                self.histories[cid] = history
        return cid

    def _persist(self, partition: int, ids: Iterable[str], mark: int | None) -> None:
        for conversation_id in ids:
            st = self.states.get(conversation_id)
            if st is None:
                self.runtime.delete(self.table, partition, conversation_id)
            else:
                self.runtime.put(self.table, partition, conversation_id, st.to_json())
        if mark is not None:
            self.runtime.put(self.table, partition, f"@{partition}", mark)

    # -- the history: in memory, or rebuilt from the newest checkpoint and the records after it ------
    def history(self, conversation_id: str) -> History | None:
        """The conversation's history (None if it is not this instance's), rebuilt if not in memory."""
        partition = self.partition_of(conversation_id)
        for _ in range(CHECKPOINT_TRIES):
            with self.ownership.locks[partition]:
                st = self.states.get(conversation_id)
                if st is None or conversation_id in self.histories:
                    return self.histories.get(conversation_id) if st is not None else None
            history, segments = self._rebuild(st)  # I/O outside the lock: the partition loop goes on
            with self.ownership.locks[partition]:
                now = self.states.get(conversation_id)
                if now is not None and (now.checkpoint, now.tail) == (st.checkpoint, st.tail):
                    self.histories[conversation_id], self.segments[conversation_id] = history, segments
                    return history
        with self.ownership.locks[partition]:  # the records keep coming: rebuild holding the lock
            st = self.states.get(conversation_id)
            if st is None:
                return None
            self.histories[conversation_id], self.segments[conversation_id] = self._rebuild(st)
            return self.histories[conversation_id]

    def _rebuild(self, st: ConversationState) -> tuple[History, list[checkpoints.Segment]]:
        """The history as the newest checkpoint and the records at the state's ``tail`` hold it; from
        the whole stream if the checkpoint cannot be read (the tenant deleted it, or it predates them)."""
        try:
            messages, segments = checkpoints.read(self.artifacts, st.checkpoint) if st.checkpoint else ([], [])
        except checkpoints.CheckpointUnreadable as e:
            LOG.warning("%s: %s; folding its history from its records", st.conversation_id, e)
            return self._refold(st.conversation_id)[1], []
        history = History(tuple(messages))
        wanted = set(st.tail)
        if wanted:
            for offset, e in self._records(st.conversation_id, min(wanted), max(wanted) + 1):
                if offset in wanted:
                    history = history.apply(e)
        return history, segments

    def _refold(self, conversation_id: str) -> tuple[ConversationState | None, History]:
        """The state and history folded from the conversation's every record (the fallback)."""
        st, history = None, History()
        for offset, e in self._records(conversation_id, 0, None):
            st, history = fold(st, history, e, offset)
        return st, history

    def _records(self, conversation_id: str, start: int, end: int | None) -> Iterable[tuple[int, Envelope]]:
        """The conversation's records in ``[start, end)`` of its partition of the events topic."""
        key = conversation_id.encode()
        partition = self.partition_of(conversation_id)
        for msg in read_range(self.settings, self.settings.events_topic, partition, start, end):
            if msg.key() != key:
                continue
            try:
                yield msg.offset(), self.codec.decode(msg.value())
            except DecodeError:
                continue

    def checkpoint(self, conversation_id: str, reply_id: str) -> None:
        """Write the history as a checkpoint (incremental: ``checkpoints.write``) and record it, while
        ``reply_id`` is current; written again if a record of the history came between."""
        partition = self.partition_of(conversation_id)
        for _ in range(CHECKPOINT_TRIES):
            history = self.history(conversation_id)
            with self.ownership.locks[partition]:
                st = self.states.get(conversation_id)
                if st is None or history is None or st.reply is None or st.reply.reply_id != reply_id:
                    return
                segments = list(self.segments.get(conversation_id, []))
                if st.checkpoint is not None and set(st.tail) <= set(st.posted.values()):
                    return  # nothing of the history recorded since the newest checkpoint
                history = self.histories.get(conversation_id, history)
            if not within_artifact_quota(self.settings, st.tenant_id, 1):  # a resume starts from the last one
                LOG.warning("no checkpoint of %s: the tenant's artifact storage is full", reply_id)
                return
            name = f"{reply_id}-t{st.reply.turns}.json"
            ref, after = checkpoints.write(self.artifacts, st.tenant_id, name, segments, history.messages)

            def record(now: ConversationState, st=st, ref=ref) -> list[Envelope]:
                records = [event(now, "artifact.stored", stored(ref), ACTOR)]  # what the store holds is listed
                current = now.reply is not None and now.reply.reply_id == reply_id
                if current and (now.checkpoint, now.tail) == (st.checkpoint, st.tail):
                    payload = {"reply_id": reply_id, "messages": now.size, "artifact": ref}
                    records.append(event(now, "agent.checkpoint", payload, ACTOR))
                return records

            if not self.settle(conversation_id, record):
                return
            with self.ownership.locks[partition]:
                now = self.states.get(conversation_id)
                if now is None or now.checkpoint == ref:
                    if now is not None:
                        self.segments[conversation_id] = after
                    return

    def append(self, events: list[Envelope]) -> None:
        """Append records to other streams (sandbox commands, leases), acknowledged."""
        append_durably(self.producer, events, self.stop_event.is_set)

    def _emit_locked(self, partition: int, events: list[Envelope]) -> bool:
        if not events:
            return False
        appended = append_durably(self.producer, events, self.stop_event.is_set)
        touched = {self._fold(e, a.offset) for e, a in zip(events, appended, strict=True)}
        if any(e.type not in UNPERSISTED for e in events):
            self._persist(partition, touched, appended[-1].offset + 1)
        return True

    def settle(self, conversation_id: str, decide_events) -> bool:
        """Records computed from the conversation's current state, written as its partition's owner."""
        partition = self.partition_of(conversation_id)

        def write() -> bool:
            current = self.states.get(conversation_id)
            return current is not None and self._emit_locked(partition, decide_events(current))

        return bool(self.ownership.write(partition, write))

    # -- the partition loop -----------------------------------------------------------------
    async def _consume(self, stream) -> None:
        async for record in stream.events():
            message = record.message
            source = Source(message.topic, message.partition, message.offset, message.key)
            await asyncio.to_thread(self.handle, source, message.value)

    def handle(self, source: Source, value: bytes) -> None:
        try:
            command = self.codec.decode(value)
        except DecodeError:
            return  # the sandbox processor dead-letters what nobody can read
        if command.type not in COMMANDS:
            return
        partition = self.partition_of(command.stream_id)
        try:
            with self.ownership.locks[partition]:
                decision = decide(self.states.get(command.stream_id), command, ACTOR)
                self._emit_locked(partition, decision.events)
        except (ValueError, KeyError, TypeError) as e:
            LOG.exception("command %s on %s failed", command.type, command.stream_id)
            dead_letter(self.producer, source, value, f"{type(e).__name__}: {e}", f"processor-{NAME}")
            return
        if decision.start_reply:
            self.kick(command.stream_id)

    # -- replies ----------------------------------------------------------------------------
    def kick(self, conversation_id: str) -> None:
        """Start the next reply (or resume the one under way) unless one runs here already."""
        with self._kicking:  # the partition loop and a reply that just ended may kick at once: one thread
            if self.stop_event.is_set() or not self.owns(conversation_id):
                return
            running = self.replies.get(conversation_id)
            if running is not None and running.is_alive():
                return
            self.settle(conversation_id, lambda now: next_reply(now, ACTOR))
            st = self.states.get(conversation_id)
            if st is None or st.reply is None:
                return
            name = f"reply-{conversation_id[-8:]}"
            thread = threading.Thread(target=self._reply, args=(conversation_id, st.reply.reply_id), name=name)
            thread.daemon = True
            self.replies[conversation_id] = thread
            thread.start()

    def _current(self, conversation_id: str, reply_id: str) -> ConversationState | None:
        st = self.states.get(conversation_id)
        if st is None or st.reply is None or st.reply.reply_id != reply_id:
            return None
        return st

    def _reply(self, conversation_id: str, reply_id: str) -> None:
        """Run one reply to completed | failed (cancelled is the cancel command's record)."""
        st = self.states[conversation_id]

        def stopped() -> bool:
            return self.stop_event.is_set() or self._current(conversation_id, reply_id) is None

        def record(type_: str, payload: dict) -> None:
            def write(now: ConversationState) -> list[Envelope]:
                if self._current(conversation_id, reply_id) is None:
                    return []
                return [event(now, type_, payload, ACTOR)]

            if stopped() or not self.owns(conversation_id) or not self.settle(conversation_id, write):
                raise ReplyStopped(f"reply {reply_id} is no longer current here")

        backend = None
        try:
            # a tool call a crash left without a result is not run again
            self.settle(conversation_id, lambda now: [] if stopped() else interrupted(now, ACTOR))
            backend = RecordedSandbox(
                self.settings,
                self.artifacts,
                self.append,
                st.tenant_id,
                st.sandbox_id,
                st.actor,
                stopped,
                self.settings.conversation_offload_bytes,
            )
            history = self.history(conversation_id)
            current = self._current(conversation_id, reply_id)
            if current is None or history is None:
                return
            if current.answered():  # resumed after its final message: only its end is missing
                self._complete(conversation_id, reply_id)
                return
            base_url, api_key = self.model_endpoint()
            run = ReplyRun(
                current,
                history.messages,
                chat_model(current.settings, base_url, api_key),
                backend,
                self.artifacts,
                record,
                lambda: self.states.get(conversation_id),
                lambda: self.checkpoint(conversation_id, reply_id),
            )
            run.run()
            self._complete(conversation_id, reply_id)
        except ReplyStopped:
            LOG.info("reply %s stopped", reply_id)
        except Exception as e:  # whatever it was, the reply fails with it rather than hang
            LOG.warning("reply %s failed: %s", reply_id, e, exc_info=not isinstance(e, AstraForgeError))
            self._end(conversation_id, reply_id, "failed", f"{type(e).__name__}: {e}"[:1000])
        finally:
            if backend is not None:
                with contextlib.suppress(Exception):
                    backend.release_leases()
                backend.close()
            self._idle(conversation_id)
            if not stopped() or self._current(conversation_id, reply_id) is None:
                threading.Thread(target=self._next, args=(conversation_id,), daemon=True).start()

    def _idle(self, conversation_id: str) -> None:
        """A conversation with nothing under way or waiting gives its history back: memory holds the
        histories of the replies running, and the next reply reads its checkpoint again."""
        with self.ownership.locks[self.partition_of(conversation_id)]:
            st = self.states.get(conversation_id)
            if st is not None and st.reply is None and not st.pending:
                self.histories.pop(conversation_id, None)
                self.segments.pop(conversation_id, None)

    def _next(self, conversation_id: str) -> None:
        thread = self.replies.get(conversation_id)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.kick(conversation_id)

    def _complete(self, conversation_id: str, reply_id: str) -> None:
        """The reply's history checkpointed (a resume, or the next reply, reads it), then its end."""
        self.checkpoint(conversation_id, reply_id)
        self._end(conversation_id, reply_id, "completed", None)

    def _end(self, conversation_id: str, reply_id: str, end: str, reason: str | None) -> None:
        def write(now: ConversationState) -> list[Envelope]:
            if now.reply is None or now.reply.reply_id != reply_id:
                return []
            return [reply_record(now, now.reply, end, ACTOR, reason)]

        if self.owns(conversation_id) and not self.stop_event.is_set():
            self.settle(conversation_id, write)

    def model_endpoint(self) -> tuple[str, str]:
        """The platform's model gateway (an operator upstream) and the key the processor sends it."""
        name = self.settings.conversation_model_upstream
        address = self.settings.egress_platform_upstreams.get(name)
        if not address:
            raise AstraForgeError(f"no model gateway: the operator upstream {name!r} is not configured")
        header = self.settings.egress_credentials.get(name, "")
        key = header.split("Bearer", 1)[-1].strip() if "Bearer" in header else "unused"
        return f"http://{address}/v1", key

    # -- ownership --------------------------------------------------------------------------
    async def _suspend(self, partitions: frozenset[int]) -> None:
        await asyncio.to_thread(self.ownership.suspend, partitions)
        await self.runtime.flush()

    async def _assigned(self, partitions: frozenset[int]) -> None:
        await asyncio.to_thread(self._take_over, partitions)

    def _take_over(self, assigned: frozenset[int]) -> None:
        new, lost = self.ownership.changes(assigned)
        for p in lost:
            self.ownership.drop(p, lambda p=p: self._forget(p))
        for p in sorted(new):
            with self.ownership.locks[p]:
                self._load(p)
        self.ownership.own(assigned)
        for st in list(self.states.values()):  # resume what the previous owner left under way
            if self.partition_of(st.conversation_id) in new and (st.reply is not None or st.pending):
                self.kick(st.conversation_id)

    def _forget(self, partition: int) -> None:
        for conversation_id in [c for c in self.states if self.partition_of(c) == partition]:
            del self.states[conversation_id]
            self.histories.pop(conversation_id, None)
            self.segments.pop(conversation_id, None)

    def _load(self, partition: int) -> None:
        """This partition's conversations from the table, then the records written after its mark.
        Histories are not loaded: a reply rebuilds its conversation's (``history``)."""
        legacy = []
        for key, value in list(self.table.data.data.items()):
            if key.startswith("@") or not isinstance(value, dict):
                continue
            if self.partition_of(value["conversation_id"]) == partition:
                if "messages" in value or "state_artifact" in value:  # a whole state, as kept before checkpoints
                    legacy.append(key)
                else:
                    self.states[key] = ConversationState.from_json(value)
        for conversation_id in legacy:
            st, history = self._refold(conversation_id)
            if st is not None:
                self.states[conversation_id], self.histories[conversation_id] = st, history
        mark = self.table.data.data.get(f"@{partition}") or 0
        touched, end = set(legacy), mark
        for msg in read_range(self.settings, self.settings.events_topic, partition, mark, None):
            end = msg.offset() + 1
            try:
                e = self.codec.decode(msg.value())
            except DecodeError:
                continue
            if e.stream_id in legacy:
                continue  # folded whole already
            if e.stream_id in self.states or e.type == "conversation.created":
                touched.add(self._fold(e, msg.offset()))
        self._persist(partition, touched, end)

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until ``stop``: the faust app on its thread."""
        self.runtime.start()
        try:
            self.stop_event.wait()
        finally:
            self.ownership.release_all()
            self.runtime.close()
            for thread in list(self.replies.values()):
                thread.join(timeout=5)
            with contextlib.suppress(Exception):
                self.producer.close()

    def stop(self) -> None:
        self.stop_event.set()
