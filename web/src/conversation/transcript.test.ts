import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../api/types";
import { Transcript } from "./transcript";

let offset = 0;
const rec = (type: string, payload: Record<string, unknown>): StreamEvent => ({
  offset: offset++, partition: 0, event_id: `e${offset}`, type, stream_id: "cv-1", sandbox_id: null,
  occurred_at: "2026-01-01T00:00:00Z", actor: "t", causation_id: null, correlation_id: null, payload,
});

describe("Transcript", () => {
  it("grows an assistant turn delta by delta, settles it, and pairs tool calls with results", () => {
    const records = [
      rec("chat.message", { message_id: "m1", role: "user", text: "Fix calc.py" }),
      rec("reply.started", { reply_id: "m1-reply", in_reply_to: "m1" }),
      rec("chat.delta", { message_id: "m1-reply:t0", index: 0, delta: "Let me " }),
    ];
    const t = new Transcript();
    t.apply(records);
    expect(t.replying).toBe("m1-reply");
    expect(t.items.map((i) => i.kind)).toEqual(["user", "assistant"]);
    const first = t.items;
    records.push(rec("chat.delta", { message_id: "m1-reply:t0", index: 1, delta: "look." }));
    expect(t.apply(records)).toBe(true);
    expect(t.items).not.toBe(first); // a new array per change
    expect(t.items[1]).toMatchObject({ text: "Let me look.", streaming: true });
    records.push(
      rec("chat.message", { message_id: "m1-reply:t0", role: "assistant", text: "Let me look." }),
      rec("tool.called", { call_id: "c1", name: "task", arguments_json: '{"description":"count"}' }),
      rec("subagent.called", { call_id: "c1", subagent_type: "general-purpose", description: "count" }),
      rec("todo.updated", { call_id: "c0", todos: [{ content: "write", status: "pending" }] }),
      rec("tool.result", { call_id: "c1", output: "Two files.", is_error: false }),
      rec("reply.completed", { reply_id: "m1-reply", state: "completed" }),
    );
    t.apply(records);
    expect(t.items[1]).toMatchObject({ text: "Let me look.", streaming: false });
    expect(t.items[2]).toMatchObject({ kind: "tool", name: "task", subagent: { type: "general-purpose" }, result: { output: "Two files." } });
    expect(t.items.map((i) => i.kind)).toEqual(["user", "assistant", "tool", "todos", "reply"]);
    expect(t.replying).toBeNull();
    expect(t.apply(records)).toBe(false); // nothing new: nothing folded twice
  });

  it("stops a cancelled turn from growing", () => {
    const t = new Transcript();
    t.apply([
      rec("reply.started", { reply_id: "m2-reply", in_reply_to: "m2" }),
      rec("chat.delta", { message_id: "m2-reply:t0", index: 0, delta: "Counting" }),
      rec("reply.cancelled", { reply_id: "m2-reply", state: "cancelled", reason: "stop" }),
    ]);
    expect(t.items[0]).toMatchObject({ kind: "assistant", streaming: false });
    expect(t.items[1]).toMatchObject({ kind: "reply", state: "cancelled", reason: "stop" });
    expect(t.replying).toBeNull();
  });
});

describe("Transcript, records written twice", () => {
  it("folds a delta or a tool call recorded again (a redone step) in once", () => {
    const records = [
      rec("reply.started", { reply_id: "m2-reply", in_reply_to: "m2" }),
      rec("chat.delta", { message_id: "m2-reply:t0", index: 0, delta: "Let me " }),
      rec("tool.called", { call_id: "c9", name: "ls", arguments_json: "{}" }),
      rec("chat.delta", { message_id: "m2-reply:t0", index: 0, delta: "Let me " }),
      rec("chat.delta", { message_id: "m2-reply:t0", index: 1, delta: "look." }),
      rec("tool.called", { call_id: "c9", name: "ls", arguments_json: "{}" }),
    ];
    const t = new Transcript();
    t.apply(records);
    expect(t.items.map((i) => i.key)).toEqual(["m:m2-reply:t0", "c:c9"]);
    expect(t.items[0]).toMatchObject({ text: "Let me look.", streaming: true });
  });
});

describe("Transcript, a turn resumed after a crash", () => {
  it("drops the cut-off attempt's text once the turn is asked again under a new id", () => {
    const t = new Transcript();
    t.apply([
      rec("reply.started", { reply_id: "m3-reply", in_reply_to: "m3" }),
      rec("chat.delta", { message_id: "m3-reply:t0", index: 0, delta: "Half a sen" }),
      rec("chat.delta", { message_id: "m3-reply:t0.1", index: 0, delta: "A whole " }),
      rec("chat.delta", { message_id: "m3-reply:t0.1", index: 1, delta: "sentence." }),
      rec("chat.message", { message_id: "m3-reply:t0.1", role: "assistant", text: "A whole sentence." }),
      rec("chat.delta", { message_id: "m3-reply:t1", index: 0, delta: "Next turn." }),
    ]);
    expect(t.items.map((i) => [i.key, i.kind === "assistant" ? i.text : ""])).toEqual([
      ["m:m3-reply:t0.1", "A whole sentence."],
      ["m:m3-reply:t1", "Next turn."],
    ]);
  });
});
