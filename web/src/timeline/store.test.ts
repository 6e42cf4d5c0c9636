import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../api/types";
import { LABEL_CHARS, TimelineStore } from "./store";

const ev = (offset: number, payload: Record<string, unknown> = {}, type = "chat.message"): StreamEvent => ({
  offset, partition: 0, event_id: `e${offset}`, type, stream_id: "s", sandbox_id: null,
  occurred_at: "2026-01-01T08:00:01.234567Z", actor: "a", causation_id: null, correlation_id: null, payload,
});
const offsets = (s: TimelineStore) => Array.from({ length: s.count }, (_, i) => s.entry(i).offset);

describe("TimelineStore", () => {
  it("drops records at or below the last offset (a replay overlapping a reconnect)", () => {
    const s = new TimelineStore((fn) => fn());
    expect(s.append([ev(1), ev(3)])).toBe(2);
    expect(s.append([ev(2), ev(3), ev(5)])).toBe(1);
    expect(offsets(s)).toEqual([1, 3, 5]);
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

  it("holds at most `keep` payloads, and an index entry (row text) for every record", () => {
    const s = new TimelineStore({ keep: 100, schedule: (fn) => fn() });
    for (let i = 0; i < 10_000; i += 500)
      s.append(Array.from({ length: 500 }, (_, j) => ev(i + j, { data: `line ${i + j}\n`.repeat(50) }, "exec.output")));
    expect(s.count).toBe(10_000);
    expect(s.payloadsHeld).toBe(100);
    expect(s.get(9_899)).toBeUndefined();
    expect(s.get(9_900)?.payload.data).toContain("line 9900");
    const old = s.entry(42);
    expect(old).toMatchObject({ offset: 42, type: "exec.output", kind: "output", time: "08:00:01.234" });
    expect(old.label).toBe(`line 42\n`.repeat(50).slice(0, LABEL_CHARS));
    expect(s.offsetSum).toBe((9_999 * 10_000) / 2);
  });

  it("fetches a record whose payload it dropped, once however often it is asked, and caches a few", async () => {
    const asked: number[] = [];
    const s = new TimelineStore({
      keep: 10,
      cached: 2,
      schedule: (fn) => fn(),
      fetchRecord: async (offset) => (asked.push(offset), ev(offset, { text: `old ${offset}`, role: "user" })),
    });
    s.append(Array.from({ length: 50 }, (_, i) => ev(i)));
    const [a, b] = await Promise.all([s.load(3), s.load(3)]);
    expect(a?.payload.text).toBe("old 3");
    expect(b).toBe(a);
    expect(asked).toEqual([3]);
    expect(s.get(3)).toBe(a); // cached
    await s.load(4);
    await s.load(5); // the cache holds two: 3 is the least recently used and goes
    expect(s.get(3)).toBeUndefined();
    expect(s.payloadsHeld).toBe(12);
    expect(await s.load(45)).toBe(s.get(45)); // a held record needs no fetch
    expect(asked).toEqual([3, 4, 5]);
  });

  it("answers null for an offset the stream does not have (the API's page starts past it)", async () => {
    const s = new TimelineStore({ keep: 1, schedule: (fn) => fn(), fetchRecord: async () => ev(9) });
    s.append([ev(1), ev(2)]);
    expect(await s.load(1)).toBeNull();
    expect(s.payloadsHeld).toBe(1);
  });
});
