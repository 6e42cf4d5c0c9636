import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../api/types";
import { TimelineStore } from "./store";

const ev = (offset: number): StreamEvent => ({
  offset, partition: 0, event_id: `e${offset}`, type: "chat.message", stream_id: "s", sandbox_id: null,
  occurred_at: "2026-01-01T00:00:00.000000Z", actor: "a", causation_id: null, correlation_id: null, payload: {},
});

describe("TimelineStore", () => {
  it("drops records at or below the last offset (a replay overlapping a reconnect)", () => {
    const s = new TimelineStore((fn) => fn());
    expect(s.append([ev(1), ev(3)])).toBe(2);
    expect(s.append([ev(2), ev(3), ev(5)])).toBe(1);
    expect(s.records.map((e) => e.offset)).toEqual([1, 3, 5]);
  });

  it("notifies once per scheduled flush however many batches arrive", () => {
    const queued: (() => void)[] = [];
    const s = new TimelineStore((fn) => queued.push(fn));
    let calls = 0;
    s.subscribe(() => calls++);
    for (let i = 0; i < 1000; i++) s.append([ev(i)]);
    expect(queued.length).toBe(1);
    queued[0]();
    expect(calls).toBe(1);
    expect(s.getVersion()).toBe(1000);
  });
});
