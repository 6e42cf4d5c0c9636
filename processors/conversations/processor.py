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
before the partition's cursor (``processors/cursor.py``) moves past the command: a redelivered command
is skipped by offset, however many came after it (the ``RECENT_USER_MESSAGES`` ids a state remembers
only catch a post appended twice). The wiring (table, cursor, catch-up, rebalance hooks) is
``processors/base.py``'s. Replies run on threads of their own (one per conversation at a
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

import contextlib
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from astraforge.artifacts import ArtifactStore, make_artifact_store
from astraforge.config import Settings
from astraforge.errors import AstraForgeError, DecodeError
from astraforge.kafka import read_range
from astraforge.processors.artifact_sweep import within_artifact_quota
from astraforge.processors.base import PartitionedProcessor
from astraforge.processors.conversations import checkpoints
from astraforge.processors.conversations.agent import ReplyRun, ReplyStopped, chat_model
from astraforge.processors.conversations.backend import RecordedSandbox, stored
from astraforge.processors.conversations.state import (
    ConversationDecision,
    ConversationState,
    History,
    decide,
    event,
    fold,
    interrupted,
    next_reply,
    reply_record,
)
from astraforge.schemas import Envelope

LOG = logging.getLogger(__name__)
NAME = "conversations"
ACTOR = "processor:conversations"
COMMANDS = frozenset({"conversation.create", "chat.post", "reply.cancel"})
UNPERSISTED = frozenset({"chat.delta"})  # change no state: the table is not rewritten per token
CHECKPOINT_TRIES = 3  # a checkpoint that a user message overtook is written again (then left to the next step)


class ConversationProcessor(PartitionedProcessor):
    name = NAME

    def __init__(self, settings: Settings, artifacts: ArtifactStore | None = None) -> None:
        super().__init__(settings)
        self.artifacts = artifacts or make_artifact_store(settings)
        self.states: dict[str, ConversationState] = {}
        # the histories in memory (rebuilt on demand from the newest checkpoint and the state's tail)
        self.histories: dict[str, History] = {}
        self.segments: dict[str, list[checkpoints.Segment]] = {}  # the newest checkpoint's, per conversation
        self.replies: dict[str, threading.Thread] = {}
        self._kicking = threading.Lock()
        self.kicks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="conversation-kick")

    # -- state ------------------------------------------------------------------------------
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

    def _persisted(self, events: list[Envelope]) -> bool:
        return any(e.type not in UNPERSISTED for e in events)

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

    # -- the partition loop -----------------------------------------------------------------
    def _takes(self, command: Envelope) -> bool:
        return command.type in COMMANDS

    def _decide(self, command: Envelope) -> ConversationDecision:
        return decide(self.states.get(command.stream_id), command, ACTOR)

    def _act(self, command: Envelope, decision: ConversationDecision) -> None:
        """A reply the command starts is kicked off this thread: ``kick`` takes ``_kicking`` before a
        partition's lock, and this runs under one."""
        if decision.start_reply and not self.stop_event.is_set():
            with contextlib.suppress(RuntimeError):  # closing: the next owner starts it
                self.kicks.submit(self.kick, command.stream_id)

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
    def _resume(self, partitions: set[int]) -> None:
        for st in list(self.states.values()):  # resume what the previous owner left under way
            if self.partition_of(st.conversation_id) in partitions and (st.reply is not None or st.pending):
                self.kick(st.conversation_id)

    def _forgotten(self, conversation_id: str) -> None:
        self.histories.pop(conversation_id, None)
        self.segments.pop(conversation_id, None)

    def _load(self, partition: int) -> None:
        """This partition's cursor and conversations from the table, then the records written after its
        mark. Histories are not loaded: a reply rebuilds its conversation's (``history``)."""
        self.cursor.load(partition, cursor_added=True)
        legacy = []
        for key, value in self.stored():
            if self.partition_of(value["conversation_id"]) == partition:
                if "messages" in value or "state_artifact" in value:  # a whole state, as kept before checkpoints
                    legacy.append(key)
                else:
                    self.states[key] = ConversationState.from_json(value)
        for conversation_id in legacy:
            st, history = self._refold(conversation_id)
            if st is not None:
                self.states[conversation_id], self.histories[conversation_id] = st, history
        # a legacy conversation is folded whole already
        touched, end, _ = self.fold_after_mark(
            partition,
            lambda e: e.stream_id not in legacy and (e.stream_id in self.states or e.type == "conversation.created"),
        )
        self._persist(partition, touched | set(legacy), end)

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until ``stop``: the faust app on its thread."""
        self.runtime.start()
        try:
            self.stop_event.wait()
        finally:
            self.ownership.release_all()
            self.close()

    def _wait_work(self) -> None:
        self.kicks.shutdown(wait=True, cancel_futures=True)
        for thread in list(self.replies.values()):
            thread.join(timeout=5)
