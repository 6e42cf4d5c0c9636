"""Hosted DeepAgent conversations end to end on real parts: the API, the conversation processor
running real deepagents against the scripted model server (at the platform's model gateway), the
sandbox processor (docker), Kafka, PostgreSQL and the projection.

One conversation creates files, runs their tests and offloads a 3 MiB tool output, streamed and
replayed over SSE; a reply is cancelled mid-stream; two conversations on one sandbox meet a file
lease; another tenant sees none of it (404). (kill -9: test_conversations_crash.py.)
"""

import json
import threading

import httpx

from tests.conftest import GATEWAY_SECRET, gateway_listener
from tests.modelserver import ModelServer, Turn, message, tool_call
from tests.support import auth, wait_until

BIG_OUTPUT = 3 * 1024 * 1024
CALC = "def add(a, b):\n    return a + b\n"
TEST_CALC = (
    "import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n\nunittest.main()\n"
)


def post(url: str, key: str, body: dict | None = None, **headers: str) -> httpx.Response:
    return httpx.post(url, json=body or {}, headers={**auth(key), **headers}, timeout=120)


def turns(*items) -> Turn:
    return Turn(tuple(items))


def create(api_url: str, key: str, **body) -> dict:
    """A new conversation, once the processor has taken it (a processor still starting answers later)."""
    r = post(f"{api_url}/v1/conversations", key, {"model": "stub-model", **body})
    assert r.status_code == 201, r.text
    url = f"{api_url}/v1/conversations/{r.json()['id']}"
    wait_until(lambda: httpx.get(url, headers=auth(key), timeout=30).status_code == 200, timeout=180, what=url)
    return r.json()


def records(api_url: str, key: str, stream_id: str) -> list[dict]:
    out, after = [], -1
    while True:
        r = httpx.get(
            f"{api_url}/v1/streams/{stream_id}/events", headers=auth(key), params={"after": after}, timeout=30
        )
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["items"]
        if page["next_after"] is None:
            return out
        after = page["next_after"]


def ended(api_url: str, key: str, conversation_id: str, n: int = 1, timeout: float = 120) -> list[dict]:
    """The stream once ``n`` replies have ended."""
    ends = ("reply.completed", "reply.failed", "reply.cancelled")
    wait_until(
        lambda: sum(e["type"] in ends for e in records(api_url, key, conversation_id)) >= n,
        timeout=timeout,
        interval=0.2,
        what=f"{n} replies of {conversation_id} ended",
    )
    return records(api_url, key, conversation_id)


def sse(api_url: str, key: str, stream_id: str, until: str, last_event_id: str | None = None) -> list[dict]:
    """The stream over SSE from the start (or after ``last_event_id``) up to the first ``until`` record."""
    headers = {**auth(key), **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    frames: list[dict] = []
    with httpx.stream("GET", f"{api_url}/v1/streams/{stream_id}/events/sse", headers=headers, timeout=60) as r:
        assert r.status_code == 200
        event_id = None
        for line in r.iter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                frames.append({**json.loads(line[5:]), "sse_id": event_id})
                if frames[-1]["type"] == until:
                    return frames
    return frames


def exec_in(api_url: str, key: str, sandbox_id: str, command: str) -> dict:
    r = post(f"{api_url}/v1/sandboxes/{sandbox_id}/exec", key, {"command": command})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_conversation_writes_files_runs_tests_and_offloads_a_large_output(
    conversations, api_url, tenant, other_tenant
) -> None:
    _, key = tenant
    _, other_key = other_tenant
    big = f"head -c {BIG_OUTPUT} /dev/zero | tr '\\0' a | fold -w 99"
    todos = [{"content": "write calc.py", "status": "in_progress"}, {"content": "test it", "status": "pending"}]
    script = [
        turns(tool_call("write_todos", {"todos": todos}),
              tool_call("write_file", {"file_path": "/workspace/calc.py", "content": CALC})),
        turns(tool_call("write_file", {"file_path": "/workspace/test_calc.py", "content": TEST_CALC})),
        turns(tool_call("execute", {"command": "cd /workspace && python test_calc.py"})),
        turns(tool_call("execute", {"command": big})),
        turns(tool_call("execute", {"command": "find /tmp/astraforge-outputs -type f"})),  # names the path
        turns(tool_call("task", {"description": "Count the files", "subagent_type": "general-purpose"})),
        turns(message("Two files.")),  # the sub-agent's own turn
        turns(message("Done: calc.py adds, its test passes, and the big output is saved.")),
    ]  # fmt: skip
    with ModelServer(script, listener=gateway_listener()) as model:
        conv = create(api_url, key, title="calc", system_prompt="You fix small Python files.")
        cv = conv["id"]
        url = f"{api_url}/v1/conversations/{cv}/messages"
        r = post(url, key, {"text": "Fix calc.py"}, **{"Idempotency-Key": "m1"})
        assert r.status_code == 202, r.text
        again = post(url, key, {"text": "Fix calc.py"}, **{"Idempotency-Key": "m1"})
        assert again.json()["message_id"] == r.json()["message_id"]  # a retried post is one message
        stream = ended(api_url, key, cv)

    types = [e["type"] for e in stream]
    assert types[0] == "conversation.created" and types[1] == "chat.message" and types[2] == "reply.started"
    assert types.count("chat.message") == 1 + 7 and types[-1] == "reply.completed", types
    called = [e["payload"] for e in stream if e["type"] == "tool.called"]
    names = ["write_todos", "write_file", "write_file", "execute", "execute", "execute", "task"]
    assert [c["name"] for c in called] == names
    results = {e["payload"]["call_id"]: e["payload"] for e in stream if e["type"] == "tool.result"}
    assert set(results) == {c["call_id"] for c in called}
    test_run = results[called[3]["call_id"]]
    assert not test_run["is_error"] and "OK" in test_run["output"], test_run
    (todo,) = [e["payload"] for e in stream if e["type"] == "todo.updated"]
    assert todo["todos"] == todos and todo["call_id"] == called[0]["call_id"]
    assert any(e["type"] == "agent.checkpoint" for e in stream)
    (sub,) = [e["payload"] for e in stream if e["type"] == "subagent.called"]
    assert sub["subagent_type"] == "general-purpose" and sub["call_id"] == called[6]["call_id"]
    assert results[sub["call_id"]]["output"] == "Two files."

    # the several-MiB output: the record keeps a summary and references the whole, in the store and the sandbox
    offloaded = results[called[4]["call_id"]]
    assert offloaded["size"] == BIG_OUTPUT + BIG_OUTPUT // 99  # fold puts a newline between 99-byte lines
    assert offloaded["artifact"]["size"] == offloaded["size"] and offloaded["path"].startswith(
        "/tmp/astraforge-outputs/"
    )
    assert len(offloaded["output"]) < 8 * 1024 and offloaded["path"] in offloaded["output"]
    for ref in (
        offloaded["artifact"],
        next(e for e in stream if e["type"] == "agent.checkpoint")["payload"]["artifact"],
    ):
        url = f"{api_url}/v1/artifacts/{ref['artifact_id']}"  # what a record references, the tenant can read
        wait_until(
            lambda url=url: httpx.get(url, headers=auth(key), timeout=60).status_code == 200, timeout=30, what=url
        )
        assert len(httpx.get(url, headers=auth(key), timeout=60).content) == ref["size"]
    found = results[called[5]["call_id"]]  # a later output that names the path is not the offload
    assert offloaded["path"] in found["output"] and found["artifact"] is None and found["path"] is None, found
    sandbox_id = conv["sandbox_id"]
    assert exec_in(api_url, key, sandbox_id, f"wc -c < {offloaded['path']}")["stdout"].strip() == str(offloaded["size"])
    fifth = model.requests[4].body["messages"]  # what the model saw of it: the path and a preview, not 3 MiB
    assert sum(len(json.dumps(m)) for m in fifth) < 64 * 1024 and offloaded["path"] in json.dumps(fifth[-1])
    assert all(r.headers["authorization"] == f"Bearer {GATEWAY_SECRET}" for r in model.requests)

    # the final message streamed as deltas that join to it
    final = [e["payload"] for e in stream if e["type"] == "chat.message"][-1]
    deltas = [
        e["payload"] for e in stream if e["type"] == "chat.delta" and e["payload"]["message_id"] == final["message_id"]
    ]
    assert "".join(d["delta"] for d in deltas) == final["text"] and [d["index"] for d in deltas] == list(
        range(len(deltas))
    )
    assert len(deltas) < len(final["text"].split())  # tokens batched: not one acknowledged append per token
    assert final["text"].startswith("Done: calc.py adds")

    # the files are in the sandbox, and each write and command is attributed to the conversation
    assert exec_in(api_url, key, sandbox_id, "cat /workspace/calc.py")["stdout"] == CALC
    sandbox_records = records(api_url, key, sandbox_id)
    accepted = [e for e in sandbox_records if e["type"].endswith(".accepted")]
    mine = [e for e in accepted if e["payload"]["requested_by"] == f"conversation:{cv}"]
    assert {e["payload"]["command_type"] for e in mine} >= {"sandbox.exec", "sandbox.file.write"}
    leased = [e["payload"] for e in sandbox_records if e["type"] == "lease.acquired"]
    assert {p["path"] for p in leased} == {"/workspace/calc.py", "/workspace/test_calc.py"}
    assert {p["holder"] for p in leased} == {f"conversation:{cv}"}

    # replayed over SSE from the start, and resumed after any record by Last-Event-ID
    replay = sse(api_url, key, cv, "reply.completed")
    assert [f["type"] for f in replay] == types
    middle = replay[len(replay) // 2]
    rest = sse(api_url, key, cv, "reply.completed", last_event_id=middle["sse_id"])
    assert [f["event_id"] for f in rest] == [f["event_id"] for f in replay[len(replay) // 2 + 1 :]]

    shown = httpx.get(f"{api_url}/v1/conversations/{cv}", headers=auth(key), timeout=30).json()
    assert shown["state"] == "idle" and shown["last_reply"] == "completed" and shown["sandbox_id"] == sandbox_id
    listed = httpx.get(f"{api_url}/v1/conversations", headers=auth(key), timeout=30).json()["items"]
    assert cv in [c["id"] for c in listed]

    # another tenant: the conversation does not exist for it
    for method, path in (
        ("GET", f"/v1/conversations/{cv}"),
        ("POST", f"/v1/conversations/{cv}/messages"),
        ("POST", f"/v1/conversations/{cv}/cancel"),
        ("GET", f"/v1/streams/{cv}/events"),
        ("GET", f"/v1/sandboxes/{sandbox_id}/leases"),
    ):
        r = httpx.request(method, f"{api_url}{path}", headers=auth(other_key), json={"text": "hi"}, timeout=30)
        assert r.status_code == 404, (path, r.status_code, r.text)
    assert cv not in [
        c["id"] for c in httpx.get(f"{api_url}/v1/conversations", headers=auth(other_key)).json()["items"]
    ]
    r = post(f"{api_url}/v1/conversations", other_key, {"model": "m", "sandbox_id": sandbox_id})
    assert r.status_code == 404  # nor can it attach to the tenant's sandbox


def test_a_reply_is_cancelled_mid_stream_and_the_next_message_is_answered(conversations, api_url, tenant) -> None:
    _, key = tenant
    hold = threading.Event()
    script = [
        Turn((message("This reply will be cut off after its first word and never finish."),), pause=hold),
        turns(message("Second reply, whole.")),
    ]
    with ModelServer(script, listener=gateway_listener()):
        cv = create(api_url, key)["id"]
        post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": "Talk"})
        wait_until(
            lambda: any(e["type"] == "chat.delta" for e in records(api_url, key, cv)), timeout=60, what="first delta"
        )
        r = post(f"{api_url}/v1/conversations/{cv}/cancel", key, {"reason": "enough"})
        assert r.status_code == 202, r.text
        assert r.json()["last_reply"] == "cancelled" and r.json()["reason"] == "enough"
        hold.set()  # the rest of the stream reaches a reply that is over: dropped
        post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": "Again"})
        stream = ended(api_url, key, cv, n=2)
    first, second = stream[2]["payload"]["reply_id"], None
    ends = [e for e in stream if e["type"].startswith("reply.") and e["type"] != "reply.started"]
    assert [e["type"] for e in ends] == ["reply.cancelled", "reply.completed"]
    assert ends[0]["payload"]["reply_id"] == first and ends[0]["payload"]["reason"] == "enough"
    second = ends[1]["payload"]["reply_id"]
    said = [e["payload"] for e in stream if e["type"] == "chat.message" and e["payload"]["role"] == "assistant"]
    assert [m["message_id"].rsplit(":", 1)[0] for m in said] == [second]  # nothing of the cancelled one
    cut = [e for e in stream if e["type"] == "chat.delta" and e["payload"]["message_id"].startswith(first)]
    assert len(cut) == 1
    r = post(f"{api_url}/v1/conversations/{cv}/cancel", key)
    assert r.status_code == 409  # nothing under way now


def test_two_conversations_on_one_sandbox_meet_a_file_lease(conversations, api_url, tenant) -> None:
    _, key = tenant
    hold = threading.Event()
    shared = "/workspace/shared.txt"
    script = [
        turns(tool_call("write_file", {"file_path": shared, "content": "A was here\n"})),
        Turn((message("A keeps the file while it talks."),), pause=hold),  # A holds the lease meanwhile
        turns(tool_call("write_file", {"file_path": shared, "content": "B was here\n"})),
        turns(message("B could not write it.")),
    ]
    with ModelServer(script, listener=gateway_listener()):
        a = create(api_url, key)
        sandbox_id = a["sandbox_id"]
        b = create(api_url, key, sandbox_id=sandbox_id)  # the blackboard: a second conversation, same sandbox
        post(f"{api_url}/v1/conversations/{a['id']}/messages", key, {"text": "write it"})
        wait_until(
            lambda: any(e["type"] == "chat.delta" for e in records(api_url, key, a["id"])), timeout=60, what="A talks"
        )
        leases = httpx.get(f"{api_url}/v1/sandboxes/{sandbox_id}/leases", headers=auth(key), timeout=30).json()
        assert [(x["path"], x["holder"]) for x in leases["items"]] == [(shared, f"conversation:{a['id']}")]
        r = post(f"{api_url}/v1/sandboxes/{sandbox_id}/leases", key, {"path": shared, "holder": "me"})
        assert r.status_code == 409 and r.json()["error"]["details"]["holder"] == f"conversation:{a['id']}"
        upload = f"{api_url}/v1/sandboxes/{sandbox_id}/files/shared.txt"  # an API client's write (relative path)
        r = httpx.put(upload, content=b"C was here\n", headers=auth(key), timeout=30)
        assert r.status_code == 409 and f"leased by conversation:{a['id']}" in r.json()["error"]["message"]
        post(f"{api_url}/v1/conversations/{b['id']}/messages", key, {"text": "write it too"})
        b_stream = ended(api_url, key, b["id"])
        hold.set()
        ended(api_url, key, a["id"])
    (refused,) = [e["payload"] for e in b_stream if e["type"] == "tool.result"]
    assert f"leased by conversation:{a['id']}" in refused["output"], refused
    assert exec_in(api_url, key, sandbox_id, f"cat {shared}")["stdout"] == "A was here\n"
    sandbox_records = records(api_url, key, sandbox_id)
    (no,) = [e["payload"] for e in sandbox_records if e["type"] == "lease.refused" and e["actor"].startswith("conv")]
    assert no["holder"] == f"conversation:{a['id']}" and no["requested_by"] == f"conversation:{b['id']}"
    released = [e["payload"]["path"] for e in sandbox_records if e["type"] == "lease.released"]
    assert shared in released  # A's reply ended: its lease went with it
    after = httpx.get(f"{api_url}/v1/sandboxes/{sandbox_id}/leases", headers=auth(key), timeout=30).json()
    assert after["items"] == []
    r = post(f"{api_url}/v1/sandboxes/{sandbox_id}/leases", key, {"path": shared, "holder": "me", "ttl_s": 30})
    assert r.status_code == 201 and r.json()["holder"].endswith("/me")
    upload = f"{api_url}/v1/sandboxes/{sandbox_id}/files/shared.txt"
    assert httpx.put(upload, content=b"x", headers=auth(key), timeout=30).status_code == 409  # not as "me"
    mine = httpx.put(upload, content=b"mine\n", headers={**auth(key), "X-Lease-Holder": "me"}, timeout=30)
    assert mine.status_code == 200, mine.text


def test_a_hostile_model_cannot_call_a_tool_the_conversation_did_not_allow(conversations, api_url, tenant) -> None:
    """``tools`` is a limit, not a hint: a model that calls ``execute`` anyway (directly, or through a
    sub-agent of an allowed ``task``) gets an error and nothing runs in the sandbox."""
    _, key = tenant
    direct = "echo direct > /workspace/pwned-direct.txt"
    nested = "echo nested > /workspace/pwned-nested.txt"
    script = [
        turns(tool_call("execute", {"command": direct})),  # only read_file is offered
        turns(message("Refused.")),
        turns(tool_call("task", {"description": "Run it for me", "subagent_type": "general-purpose"})),
        turns(tool_call("execute", {"command": nested})),  # the sub-agent's own turn
        turns(message("Refused too.")),  # the sub-agent's last turn
        turns(message("Nothing ran.")),
    ]
    with ModelServer(script, listener=gateway_listener()):
        only_read = create(api_url, key, tools=["read_file"])
        post(f"{api_url}/v1/conversations/{only_read['id']}/messages", key, {"text": "run it"})
        first = ended(api_url, key, only_read["id"])
        with_task = create(api_url, key, sandbox_id=only_read["sandbox_id"], tools=["read_file", "task"])
        post(f"{api_url}/v1/conversations/{with_task['id']}/messages", key, {"text": "delegate it"})
        second = ended(api_url, key, with_task["id"])
    assert first[-1]["type"] == "reply.completed" and second[-1]["type"] == "reply.completed", (first, second)
    (refused,) = [e["payload"] for e in first if e["type"] == "tool.result"]
    assert refused["is_error"] and "execute is not allowed" in refused["output"], refused
    sandbox_id = only_read["sandbox_id"]
    ran = [e["payload"]["shell"] for e in records(api_url, key, sandbox_id) if e["type"] == "sandbox.exec"]
    assert not [s for s in ran if "pwned" in (s or "")], ran
    assert exec_in(api_url, key, sandbox_id, "ls /workspace")["stdout"].count("pwned") == 0


def test_a_tool_call_larger_than_a_record_fails_its_reply_and_the_next_is_answered(
    conversations, api_url, tenant
) -> None:
    """A hostile model's 2 MiB tool arguments cannot be one record: the reply fails with the reason,
    nothing of it runs, and the conversation answers its next message."""
    _, key = tenant
    huge = "y" * (2 * 1024 * 1024)
    script = [
        turns(tool_call("write_file", {"file_path": "/workspace/huge.txt", "content": huge})),
        turns(message("Should not be reached by the failed reply.")),
        turns(message("Back to normal.")),
    ]
    with ModelServer(script, listener=gateway_listener()):
        conv = create(api_url, key)
        cv = conv["id"]
        post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": "write a huge file"})
        first = ended(api_url, key, cv)
        post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": "and now?"})
        stream = ended(api_url, key, cv, n=2)
    ends = [e for e in stream if e["type"] in ("reply.completed", "reply.failed", "reply.cancelled")]
    assert [e["type"] for e in ends] == ["reply.failed", "reply.completed"], first
    assert exec_in(api_url, key, conv["sandbox_id"], "ls /workspace")["stdout"].count("huge") == 0


def test_a_tool_call_with_a_lone_surrogate_fails_its_reply_and_the_next_is_answered(
    conversations, api_url, tenant
) -> None:
    """A hostile model's tool arguments escape a lone surrogate (JSON can, UTF-8 cannot): its
    ``tool.called`` holds the escape, the tool cannot run (its path is no text) and the reply fails.
    Every later reply failed too: the history gave the model the surrogate back, and the request to
    the model could not be encoded; the conversation was unusable for good."""
    _, key = tenant
    script = [
        turns(tool_call("write_file", {"file_path": "/workspace/x\udcff.txt", "content": "a\ud800"})),
        *[turns(message("Back to normal."))] * 2,  # the failed reply may have asked again first
    ]
    with ModelServer(script, listener=gateway_listener()):
        cv = create(api_url, key)["id"]
        post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": "write it"})
        first = ended(api_url, key, cv)
        post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": "and now?"})
        stream = ended(api_url, key, cv, n=2)
    ends = [e for e in stream if e["type"] in ("reply.completed", "reply.failed", "reply.cancelled")]
    assert [e["type"] for e in ends] == ["reply.failed", "reply.completed"], (first, ends)
    called = next(e["payload"] for e in stream if e["type"] == "tool.called")
    assert (
        json.loads(called["arguments_json"])["file_path"] == "/workspace/x\udcff.txt"
    )  # recorded as the model sent it


def test_many_messages_posted_at_once_are_each_answered_in_their_order(conversations, api_url, tenant) -> None:
    """Eight clients post to one conversation at the same moment: every message is on the record
    once, and the replies answer them one at a time in the order they were recorded."""
    _, key = tenant
    n = 8
    script = [turns(message(f"reply {i}")) for i in range(n)]
    with ModelServer(script, listener=gateway_listener()):
        cv = create(api_url, key)["id"]
        start, accepted = threading.Barrier(n), {}

        def send(i: int) -> None:
            start.wait()
            r = post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": f"message {i}"})
            accepted[i] = (r.status_code, r.json().get("message_id"))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stream = ended(api_url, key, cv, n=n, timeout=180)
    assert sorted(code for code, _ in accepted.values()) == [202] * n
    asked = [
        e["payload"]["message_id"] for e in stream if e["type"] == "chat.message" and e["payload"]["role"] == "user"
    ]
    assert sorted(asked) == sorted(m for _, m in accepted.values())  # each once
    answered = [e["payload"]["in_reply_to"] for e in stream if e["type"] == "reply.started"]
    assert answered == asked
    ends = [e["type"] for e in stream if e["type"] in ("reply.completed", "reply.failed", "reply.cancelled")]
    assert ends == ["reply.completed"] * n
