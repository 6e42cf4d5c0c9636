"""Hosted DeepAgent conversations: create (on a new or existing sandbox), post messages, list, show,
cancel the reply under way.

Every write is a command the conversation processor answers (``processors/conversations``):
``conversation.create`` -> ``conversation.created``, ``chat.post`` -> the user's ``chat.message``
(the message is on the record before the POST answers; the reply follows on the conversation's
stream), ``reply.cancel`` -> ``reply.cancelled``. Creating a conversation and posting a message
honour an ``Idempotency-Key``. The reply streams as records on ``/v1/streams/{id}/events/sse``:
``reply.started``, ``chat.delta``, ``chat.message``, ``tool.called``, ``subagent.called``,
``tool.result``, ``todo.updated``, ``agent.checkpoint``, then ``reply.completed`` | ``reply.failed``
| ``reply.cancelled``. Reads come from the projection (``conversations`` and the stream's records).
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from astraforge.api.commands import Answer, new_sandbox_id
from astraforge.api.deps import (
    AppSettings,
    Commands,
    Conn,
    CurrentTenant,
    IdempotencyKey,
    OwnedConversation,
    ensure_open,
    owned_sandbox,
)
from astraforge.api.errors import ApiError
from astraforge.api.idempotency import Claim, resumed
from astraforge.api.models import (
    ConversationCreate,
    ConversationDetail,
    ConversationMessage,
    ConversationPublic,
    ConversationsPublic,
    ErrorBody,
    MessageAccepted,
    ReplyCancel,
    SandboxCreate,
)
from astraforge.api.params import After
from astraforge.api.quotas import admit_sandboxes
from astraforge.api.routes.sandboxes import check_spec, requested_sandbox
from astraforge.ids import from_micros, iso, new_id
from astraforge.projections.queries import queries_for
from astraforge.schemas import Envelope

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody},
          422: {"model": ErrorBody}}  # fmt: skip
ANSWER_WAIT_S = 3.0  # a running processor answers in milliseconds; past it the command is on its way
DETAIL_TYPES = ["chat.message", "tool.called", "tool.result", "subagent.called", "todo.updated",
                "reply.started", "reply.completed", "reply.failed", "reply.cancelled"]  # fmt: skip


def new_conversation_id() -> str:
    return f"cv-{new_id().replace('-', '')}"


def _record(tenant: str, conversation_id: str, type_: str, payload: dict, sandbox_id: str | None = None) -> Envelope:
    return Envelope(
        type=type_,
        stream_id=conversation_id,
        tenant_id=tenant,
        actor=f"tenant:{tenant}",
        sandbox_id=sandbox_id,
        payload=payload,
    )


async def _ask(commands, tenant: str, record: Envelope, answer: Answer, claim: Claim | None = None) -> Envelope | None:
    """Append ``record`` (durably: the processor acts on it whenever it runs) and its answer, or None
    if the processor did not answer within ``ANSWER_WAIT_S`` (the command stands; the stream shows
    what follows, as for a run request)."""
    try:
        found = await commands.call(tenant, [record], {record.stream_id: answer}, ANSWER_WAIT_S, claim)
    except TimeoutError:
        return None
    return found[record.stream_id][-1]


@router.post(
    "", status_code=201, response_model=ConversationPublic, operation_id="createConversation", responses=ERRORS
)
async def create_conversation(
    body: ConversationCreate,
    request: Request,
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    commands: Commands,
    idempotency: IdempotencyKey,
) -> Response:
    if body.sandbox_id is not None:  # as every sandbox route finds it (one just created is waited for)
        ensure_open(await owned_sandbox(body.sandbox_id, tenant, conn, settings, request))
    new_sandbox = body.sandbox or SandboxCreate()
    profile = check_spec(new_sandbox, request) if body.sandbox_id is None else None

    async def create(ids: dict, claim: Claim | None) -> tuple[int, ConversationPublic]:
        sandbox_id = body.sandbox_id or ids["sandbox_id"]
        if body.sandbox_id is None:
            if not resumed(claim):
                await admit_sandboxes(
                    conn, settings, tenant, [sandbox_id], profile.ram_mb, request.app.state.reservations
                )
            spec = requested_sandbox(new_sandbox, profile, new_sandbox.image or settings.sandbox_image)
            # not awaited to be ready: the agent's first command waits for it (a failed one fails the reply)
            await commands.create_sandboxes(tenant, spec, [sandbox_id], None, claim)
            request.app.state.reservations.appended(tenant, [sandbox_id])
        payload = {
            "sandbox_id": sandbox_id,
            "model": body.model,
            "temperature": body.temperature,
            "max_tokens": body.max_tokens,
            "system_prompt": body.system_prompt,
            "tools": body.tools,
            "title": body.title,
        }
        conversation_id = ids["conversation_id"]
        record = _record(tenant, conversation_id, "conversation.create", payload, sandbox_id)
        done = await _ask(commands, tenant, record, Answer(("conversation.created",), ("conversation.created",)), claim)
        at = iso(from_micros(done.occurred_at if done else record.occurred_at))
        return 201, ConversationPublic(
            id=conversation_id,
            sandbox_id=sandbox_id,
            model=body.model,
            title=body.title,
            state="idle" if done else "requested",
            reply_id=None,
            last_reply=None,
            reason=None,
            created_at=at,
            updated_at=at,
            stream=f"/v1/streams/{conversation_id}/events/sse",
        )

    ids = {"conversation_id": new_conversation_id(), "sandbox_id": new_sandbox_id()}
    return await idempotency.run({"body": body}, ids, create)


@router.post(
    "/{conversation_id}/messages",
    status_code=202,
    response_model=MessageAccepted,
    operation_id="postConversationMessage",
    responses=ERRORS,
)
async def post_message(
    body: ConversationMessage,
    conversation: OwnedConversation,
    tenant: CurrentTenant,
    commands: Commands,
    idempotency: IdempotencyKey,
) -> Response:
    """Post a user message: accepted once it is on the record; the reply streams on the conversation's
    stream (a message posted while a reply runs waits its turn)."""
    conversation_id = conversation["conversation_id"]

    async def post(ids: dict, claim: Claim | None) -> tuple[int, MessageAccepted]:
        message_id = ids["message_id"]
        payload = {"message_id": message_id, "role": "user", "text": body.text}
        record = _record(tenant, conversation_id, "chat.post", payload, conversation["sandbox_id"])
        answer = Answer(("chat.message",), ("chat.message",), "message_id", message_id)
        await _ask(commands, tenant, record, answer, claim)
        return 202, MessageAccepted(
            conversation_id=conversation_id,
            message_id=message_id,
            reply_id=f"{message_id}-reply",
            stream=f"/v1/streams/{conversation_id}/events/sse",
        )

    return await idempotency.run({"body": body, "conversation": conversation_id}, {"message_id": _message_id()}, post)


def _message_id() -> str:
    return f"msg-{new_id().replace('-', '')}"


@router.post(
    "/{conversation_id}/cancel",
    status_code=202,
    response_model=ConversationPublic,
    operation_id="cancelConversationReply",
    responses=ERRORS,
)
async def cancel_reply(
    conversation: OwnedConversation, tenant: CurrentTenant, commands: Commands, body: ReplyCancel | None = None
) -> ConversationPublic:
    """Stop the reply under way (mid-stream): ``reply.cancelled`` with the reason; its later tokens are dropped."""
    if conversation["state"] != "replying":
        raise ApiError(409, f"conversation {conversation['conversation_id']} has no reply under way")
    reply_id = conversation["reply_id"]
    reason = (body.reason if body else None) or f"cancelled by tenant:{tenant}"
    payload = {"reply_id": reply_id, "in_reply_to": reply_id.removesuffix("-reply"), "state": "cancel",
               "reason": reason}  # fmt: skip
    record = _record(tenant, conversation["conversation_id"], "reply.cancel", payload, conversation["sandbox_id"])
    answer = Answer(("reply.cancelled", "reply.completed", "reply.failed"),
                    ("reply.cancelled", "reply.completed", "reply.failed"), "reply_id", reply_id)  # fmt: skip
    done = await _ask(commands, tenant, record, answer)
    public = ConversationPublic.from_row(conversation)
    if done is not None:  # else the cancel is on its way (the stream shows reply.cancelled)
        public.state, public.last_reply, public.reason = "idle", done.payload["state"], done.payload.get("reason")
        public.updated_at = iso(from_micros(done.occurred_at))
    return public


@router.get("", response_model=ConversationsPublic, operation_id="listConversations", responses=ERRORS)
async def list_conversations(
    tenant: CurrentTenant,
    conn: Conn,
    settings: AppSettings,
    after: After = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    sandbox_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")] = None,
) -> ConversationsPublic:
    rows = await queries_for(settings.projection_schema).conversations(conn, tenant, after, limit, sandbox_id)
    items = [ConversationPublic.from_row(r) for r in rows]
    return ConversationsPublic(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get("/{conversation_id}", response_model=ConversationDetail, operation_id="getConversation", responses=ERRORS)
async def get_conversation(
    conversation: OwnedConversation, tenant: CurrentTenant, conn: Conn, settings: AppSettings
) -> ConversationDetail:
    """The conversation with its messages, tool calls, results and reply outcomes, in order."""
    records = await queries_for(settings.projection_schema).answers(
        conn, tenant, conversation["conversation_id"], DETAIL_TYPES, None, None
    )
    messages = [{"type": r["type"], "actor": r["actor"], **r["payload"]} for r in records]
    return ConversationDetail(**ConversationPublic.from_row(conversation).model_dump(), messages=messages)
