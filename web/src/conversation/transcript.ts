/**
 * A conversation's records folded into what a reader sees: user and assistant messages (an assistant
 * turn grows delta by delta until its chat.message settles it), tool calls paired with their results,
 * sub-agent calls, todo lists and how each reply ended. Folding is incremental (`apply` takes each new
 * batch of records), so a streaming reply costs work per new record, not per record held. Items are
 * never changed in place: a change replaces the item with a new object, so a view memoised on the
 * item (React.memo) re-renders only the message that received deltas, not every entry per token batch.
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
  /** The last offset folded in (a batch overlapping it after a reconnect folds nothing twice). */
  lastOffset = -1;
  private byKey = new Map<string, Item>();
  private positions = new Map<string, number>();
  /** Keys of the assistant items still streaming (a reply's end settles them). */
  private streaming = new Set<string>();
  private deltaIndexes = new Map<string, Set<number>>();
  /** Per model turn (`<reply>:t<n>`), the key of its newest attempt (`<reply>:t<n>.<k>` after a resume). */
  private attempts = new Map<string, string>();
  /** `items` is copied once per batch that changes it, on the first change. */
  private copied = false;

  /** Folds in the records of `batch` past the last offset folded; returns whether anything visible changed. */
  apply(batch: readonly StreamEvent[]): boolean {
    let changed = false;
    this.copied = false;
    for (const e of batch) {
      if (e.offset <= this.lastOffset) continue;
      this.lastOffset = e.offset;
      changed = this.one(e) || changed;
    }
    return changed;
  }

  /** A new items array for this batch (React sees the change), made once per batch. */
  private writable(): Item[] {
    if (!this.copied) {
      this.items = [...this.items];
      this.copied = true;
    }
    return this.items;
  }

  /** Replaces an item by a changed copy: the other items keep their identity. */
  private update<T extends Item>(item: T, change: Partial<T>): T {
    const next: T = { ...item, ...change };
    this.writable()[this.positions.get(item.key)!] = next;
    this.byKey.set(item.key, next);
    if (!(next.kind === "assistant" && (next as Item & { kind: "assistant" }).streaming)) this.streaming.delete(next.key);
    return next;
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
    const items = this.writable();
    items.splice(this.positions.get(before)!, 1); // rare (a resume): the positions after it are redone
    this.byKey.delete(before);
    this.positions.delete(before);
    this.streaming.delete(before);
    items.forEach((item, i) => this.positions.set(item.key, i));
  }

  private add(item: Item): void {
    this.positions.set(item.key, this.items.length);
    this.writable().push(item);
    this.byKey.set(item.key, item);
    if (item.kind === "assistant" && item.streaming) this.streaming.add(item.key);
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
        if (found?.kind === "assistant") this.update(found, { text: String(p.text ?? ""), streaming: false });
        else if (p.text) this.add({ kind: "assistant", key: `m:${p.message_id}`, text: String(p.text), streaming: false });
        return true;
      }
      case "chat.delta": {
        if (this.seenBefore(`m:${p.message_id}`, p.index)) return false; // a redone step sent it again
        this.supersede(`m:${p.message_id}`);
        const found = this.byKey.get(`m:${p.message_id}`);
        if (found?.kind === "assistant") {
          if (!found.streaming) return false; // the settled message already holds every delta
          this.update(found, { text: found.text + String(p.delta ?? "") });
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
        this.update(call, { subagent: { type: String(p.subagent_type), description: String(p.description ?? "") } });
        return true;
      }
      case "tool.result": {
        const call = this.byKey.get(`c:${p.call_id}`);
        const result = { output: String(p.output ?? ""), isError: !!p.is_error, path: p.path ?? undefined };
        if (call?.kind === "tool") this.update(call, { result });
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
          for (const key of [...this.streaming]) this.update(this.byKey.get(key) as Item & { kind: "assistant" }, { streaming: false }); // a cancelled turn stops growing
          this.add({ kind: "reply", key: `r:${e.offset}`, state: ENDS[e.type], reason: p.reason ?? null });
          return true;
        }
        return false;
    }
  }
}
