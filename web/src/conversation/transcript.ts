/**
 * A conversation's records folded into what a reader sees: user and assistant messages (an assistant
 * turn grows delta by delta until its chat.message settles it), tool calls paired with their results,
 * sub-agent calls, todo lists and how each reply ended. Folding is incremental (`apply` takes the
 * records past the ones already seen), so a streaming reply costs work per new record, not per record held.
 */
import type { StreamEvent } from "../api/types";

export type Item =
  | { kind: "user"; key: string; text: string }
  | { kind: "assistant"; key: string; text: string; streaming: boolean }
  | { kind: "tool"; key: string; name: string; args: string; result?: { output: string; isError: boolean; path?: string }; subagent?: { type: string; description: string } }
  | { kind: "todos"; key: string; todos: { content: string; status: string }[] }
  | { kind: "reply"; key: string; state: "completed" | "failed" | "cancelled"; reason: string | null };

const ENDS: Record<string, "completed" | "failed" | "cancelled"> = {
  "reply.completed": "completed",
  "reply.failed": "failed",
  "reply.cancelled": "cancelled",
};

export class Transcript {
  items: Item[] = [];
  /** The reply under way (its id), or null when the agent is idle. */
  replying: string | null = null;
  /** How many records of the stream have been folded in. */
  seen = 0;
  private byKey = new Map<string, Item>();
  private deltaIndexes = new Map<string, Set<number>>();
  /** Per model turn (`<reply>:t<n>`), the key of its newest attempt (`<reply>:t<n>.<k>` after a resume). */
  private attempts = new Map<string, string>();

  /** Folds in `records[this.seen..]`; returns whether anything visible changed. */
  apply(records: readonly StreamEvent[]): boolean {
    const before = this.items.length;
    let changed = false;
    for (; this.seen < records.length; this.seen++) changed = this.one(records[this.seen]) || changed;
    if (changed || this.items.length !== before) this.items = [...this.items]; // a new array: React sees the change
    return changed;
  }

  /** Whether a delta of this message with this index was folded in already (indexes are per message). */
  private seenBefore(key: string, index: unknown): boolean {
    if (typeof index !== "number") return false;
    let seen = this.deltaIndexes.get(key);
    if (!seen) this.deltaIndexes.set(key, (seen = new Set()));
    if (seen.has(index)) return true;
    seen.add(index);
    return false;
  }

  /**
   * A turn cut off mid-stream (its processor died) is asked again under a new message id: the cut-off
   * attempt's text, which never got its whole message, is dropped once a later attempt shows up.
   */
  private supersede(key: string): void {
    const turn = key.replace(/\.\d+$/, "");
    const before = this.attempts.get(turn);
    this.attempts.set(turn, key);
    if (before === undefined || before === key) return;
    const old = this.byKey.get(before);
    if (old?.kind !== "assistant") return;
    this.items = this.items.filter((i) => i !== old);
    this.byKey.delete(before);
  }

  private add(item: Item): void {
    this.items.push(item);
    this.byKey.set(item.key, item);
  }

  private one(e: StreamEvent): boolean {
    const p = e.payload ?? {};
    switch (e.type) {
      case "chat.message": {
        if (p.role === "user") {
          if (this.byKey.has(`m:${p.message_id}`)) return false;
          this.add({ kind: "user", key: `m:${p.message_id}`, text: String(p.text ?? "") });
          return true;
        }
        this.supersede(`m:${p.message_id}`);
        const found = this.byKey.get(`m:${p.message_id}`);
        if (found?.kind === "assistant") {
          found.text = String(p.text ?? "");
          found.streaming = false;
        } else if (p.text) this.add({ kind: "assistant", key: `m:${p.message_id}`, text: String(p.text), streaming: false });
        return true;
      }
      case "chat.delta": {
        if (this.seenBefore(`m:${p.message_id}`, p.index)) return false; // a redone step sent it again
        this.supersede(`m:${p.message_id}`);
        const found = this.byKey.get(`m:${p.message_id}`);
        if (found?.kind === "assistant") {
          if (!found.streaming) return false; // the settled message already holds every delta
          found.text += String(p.delta ?? "");
        } else this.add({ kind: "assistant", key: `m:${p.message_id}`, text: String(p.delta ?? ""), streaming: true });
        return true;
      }
      case "tool.called":
        if (this.byKey.has(`c:${p.call_id}`)) return false; // the same call recorded again after a redo
        this.add({ kind: "tool", key: `c:${p.call_id}`, name: String(p.name), args: String(p.arguments_json ?? "{}") });
        return true;
      case "subagent.called": {
        const call = this.byKey.get(`c:${p.call_id}`);
        if (call?.kind !== "tool") return false;
        call.subagent = { type: String(p.subagent_type), description: String(p.description ?? "") };
        return true;
      }
      case "tool.result": {
        const call = this.byKey.get(`c:${p.call_id}`);
        const result = { output: String(p.output ?? ""), isError: !!p.is_error, path: p.path ?? undefined };
        if (call?.kind === "tool") call.result = result;
        else this.add({ kind: "tool", key: `c:${p.call_id}`, name: String(p.name ?? "tool"), args: "{}", result });
        return true;
      }
      case "todo.updated":
        this.add({ kind: "todos", key: `t:${e.offset}`, todos: Array.isArray(p.todos) ? p.todos : [] });
        return true;
      case "reply.started":
        this.replying = String(p.reply_id);
        return true;
      default:
        if (e.type in ENDS) {
          if (this.replying === p.reply_id) this.replying = null;
          for (const item of this.items) if (item.kind === "assistant") item.streaming = false; // a cancelled turn stops growing
          this.add({ kind: "reply", key: `r:${e.offset}`, state: ENDS[e.type], reason: p.reason ?? null });
          return true;
        }
        return false;
    }
  }
}
