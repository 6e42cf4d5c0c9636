import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../api/types";
import { FilteredIndex } from "./filter";
import { TimelineStore } from "./store";

const ev = (offset: number, type: string): StreamEvent => ({
  offset, partition: 0, event_id: `e${offset}`, type, stream_id: "s", sandbox_id: null,
  occurred_at: "2026-01-01T08:00:00.000000Z", actor: "a", causation_id: null, correlation_id: null, payload: {},
});

describe("FilteredIndex", () => {
  it("tests each new record once: a record appended to a 10k-record run costs one predicate call", () => {
    const store = new TimelineStore({ schedule: (fn) => fn() });
    store.append(Array.from({ length: 10_000 }, (_, i) => ev(i, i % 3 ? "exec.output" : "exec.started")));
    let calls = 0;
    const view = new FilteredIndex(store, (s, i) => (calls++, s.kindAt(i) !== "output"));
    expect(view.update()).toBe(3334);
    expect(calls).toBe(10_000);
    expect(view.update()).toBe(3334); // a render with nothing new tests nothing
    expect(calls).toBe(10_000);
    store.append([ev(10_000, "exec.started")]);
    expect(view.update()).toBe(3335);
    expect(calls).toBe(10_001);
    store.append([ev(10_001, "exec.output"), ev(10_002, "exec.output")]);
    expect(view.update()).toBe(3335);
    expect(calls).toBe(10_003);
    expect(view.row(0).offset).toBe(0);
    expect(view.row(3334).offset).toBe(10_000);
  });
});
