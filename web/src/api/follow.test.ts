import { describe, expect, it } from "vitest";
import { followStream, reconnectDelay } from "./follow";
import type { StreamEvent } from "./types";

const frame = (o: number) => `id: ${o}\nevent: chat.message\ndata: {"offset":${o},"type":"chat.message","payload":{}}\n\n`;

/** A fake server that cuts the connection after two frames each time and replays from Last-Event-ID minus one. */
function server(total: number) {
  const seen: (string | null)[] = [];
  const impl = (async (_url: string, init: RequestInit) => {
    const last = (init.headers as Record<string, string>)["Last-Event-ID"];
    seen.push(last ?? null);
    const from = last === undefined ? 0 : Math.max(Number(last), 0); // overlaps one record on purpose
    let o = from;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (o < Math.min(from + 3, total)) c.enqueue(new TextEncoder().encode(frame(o++)));
        else if (from + 3 < total) c.error(new TypeError("network error")); // the cut, after what was sent
        // else: stays open, like a live stream
      },
    });
    return new Response(body, { status: 200 });
  }) as unknown as typeof fetch;
  return { impl, seen };
}

describe("followStream", () => {
  it("resumes with Last-Event-ID after each drop: every record once, in order", async () => {
    const { impl, seen } = server(10);
    const got: number[] = [];
    await new Promise<void>((done) => {
      const stop = followStream("s", {
        fetchImpl: impl,
        backoffMs: () => 0,
        onEvents: (b: StreamEvent[]) => {
          got.push(...b.map((e) => e.offset));
          if (got.length >= 10) { stop(); done(); }
        },
      });
    });
    expect(got).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(seen[0]).toBeNull();
    expect(seen.slice(1)).toEqual(["2", "4", "6", "8"]);
  });
});

describe("followStream delivery", () => {
  it("never advances Last-Event-ID past records it did not deliver (a bad frame mid-chunk)", async () => {
    // first connection: records 0 and 1 then a truncated frame for 2, all in one chunk; the resume must ask
    // for what follows 1, so 0 and 1 are delivered once and 2 arrives whole on the second connection
    const seen: (string | null)[] = [];
    const impl = (async (_url: string, init: RequestInit) => {
      const last = (init.headers as Record<string, string>)["Last-Event-ID"];
      seen.push(last ?? null);
      const text = last === undefined ? frame(0) + frame(1) + 'id: 2\ndata: {"offset":2,\n\n' : frame(Number(last) + 1);
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (!sent) { sent = true; c.enqueue(new TextEncoder().encode(text)); }
        },
      });
      return new Response(body, { status: 200 });
    }) as unknown as typeof fetch;
    const got: number[] = [];
    await new Promise<void>((done) => {
      const stop = followStream("s", {
        fetchImpl: impl,
        backoffMs: () => 0,
        onEvents: (b: StreamEvent[]) => {
          got.push(...b.map((e) => e.offset));
          if (got.length >= 3) { stop(); done(); }
        },
      });
    });
    expect(got).toEqual([0, 1, 2]);
    expect(seen).toEqual([null, "1"]);
  }, 2000);
});

describe("followStream stop", () => {
  it("stops at once while waiting to reconnect, and fetches nothing more", async () => {
    let fetches = 0;
    const impl = (async () => {
      fetches++;
      throw new TypeError("network error");
    }) as unknown as typeof fetch;
    const states: string[] = [];
    await new Promise<void>((done) => {
      const stop = followStream("s", {
        fetchImpl: impl,
        backoffMs: () => 60_000,
        onEvents: () => {},
        onState: (s) => {
          states.push(s);
          if (s === "reconnecting") stop();
          if (s === "closed") done();
        },
      });
    });
    expect(states).toEqual(["connecting", "reconnecting", "closed"]);
    expect(fetches).toBe(1);
  }, 2000);
});

describe("reconnectDelay", () => {
  it("grows to 5 s and spreads each delay over the upper half of its step", () => {
    expect([0, 1, 2, 5, 30].map((n) => reconnectDelay(n, () => 1))).toEqual([250, 500, 1000, 5000, 5000]);
    expect([0, 1, 2, 5, 30].map((n) => reconnectDelay(n, () => 0))).toEqual([125, 250, 500, 2500, 2500]);
  });
});
