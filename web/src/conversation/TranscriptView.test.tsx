// @vitest-environment jsdom
/**
 * Render counts of the transcript's entries while a reply streams, read the way React DevTools reads
 * them: the DevTools hook sees every commit, and an entry's fiber carries React's PerformedWork flag
 * only in a commit where it rendered (a memo bail-out leaves it unset).
 */
import { act, createElement } from "react";
import type { Root } from "react-dom/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StreamEvent } from "../api/types";
import { Transcript } from "./transcript";
import { Entry, TranscriptView } from "./TranscriptView";

const PERFORMED_WORK = 1;
const renders = new Map<string, number>();

function count(fiber: any): void {
  for (let f = fiber; f; f = f.sibling) {
    if (f.elementType === Entry && f.flags & PERFORMED_WORK) renders.set(f.key, (renders.get(f.key) ?? 0) + 1);
    count(f.child);
  }
}

let offset = 0;
const rec = (type: string, payload: Record<string, unknown>): StreamEvent => ({
  offset: offset++, partition: 0, event_id: `e${offset}`, type, stream_id: "cv-1", sandbox_id: null,
  occurred_at: "2026-01-01T00:00:00Z", actor: "t", causation_id: null, correlation_id: null, payload,
});

let root: Root;
let container: HTMLElement;

beforeAll(async () => {
  (globalThis as any).IS_REACT_ACT_ENVIRONMENT = true;
  // installed before react-dom loads: react-dom registers with the hook when it starts
  (globalThis as any).__REACT_DEVTOOLS_GLOBAL_HOOK__ = {
    supportsFiber: true,
    isDisabled: false,
    renderers: new Map(),
    inject: () => 1,
    checkDCE: () => {},
    onScheduleFiberRoot: () => {},
    onCommitFiberRoot: (_id: number, fiberRoot: any) => count(fiberRoot.current),
    onPostCommitFiberRoot: () => {},
    onCommitFiberUnmount: () => {},
  };
  const { createRoot } = await import("react-dom/client");
  container = document.createElement("div");
  document.body.append(container);
  root = createRoot(container);
});

afterAll(() => {
  act(() => root.unmount());
  container.remove();
  delete (globalThis as any).__REACT_DEVTOOLS_GLOBAL_HOOK__;
});

describe("TranscriptView", () => {
  it("re-renders only the message receiving deltas, once per token batch", () => {
    const t = new Transcript();
    const show = () => act(() => root.render(createElement(TranscriptView, { items: t.items })));
    const history: StreamEvent[] = [];
    for (let i = 0; i < 20; i++) {
      history.push(
        rec("chat.message", { message_id: `u${i}`, role: "user", text: `question ${i}` }),
        rec("chat.message", { message_id: `a${i}`, role: "assistant", text: `answer ${i}` }),
        rec("tool.called", { call_id: `c${i}`, name: "ls", arguments_json: "{}" }),
        rec("tool.result", { call_id: `c${i}`, output: "a b", is_error: false }),
      );
    }
    history.push(rec("reply.started", { reply_id: "r", in_reply_to: "u19" }), rec("chat.delta", { message_id: "r:t0", index: 0, delta: "Let" }));
    t.apply(history);
    show();
    expect(renders.size).toBe(61);
    for (let batch = 1; batch <= 10; batch++) {
      t.apply([rec("chat.delta", { message_id: "r:t0", index: 2 * batch - 1, delta: " me" }), rec("chat.delta", { message_id: "r:t0", index: 2 * batch, delta: "!" })]);
      show();
    }
    expect(container.querySelector("[data-streaming=true]")?.textContent).toContain("Let" + " me!".repeat(10));
    expect(renders.get("m:r:t0")).toBe(11);
    const others = [...renders].filter(([key]) => key !== "m:r:t0");
    expect(others.length).toBe(60);
    expect(others.every(([, n]) => n === 1)).toBe(true);

    t.apply([rec("chat.message", { message_id: "r:t0", role: "assistant", text: "Done." }), rec("reply.completed", { reply_id: "r", state: "completed" })]);
    show(); // the reply settles: its message and the new end marker render, nothing else
    expect(renders.get("m:r:t0")).toBe(12);
    expect(renders.get(`r:${offset - 1}`)).toBe(1);
    expect([...renders].filter(([key]) => key !== "m:r:t0").every(([, n]) => n === 1)).toBe(true);
  });
});
