/**
 * Follow a stream over SSE and keep following across network drops: each reconnect sends
 * Last-Event-ID (the last offset received), and anything at or below it is dropped, so the caller
 * sees every record exactly once and in order.
 */
import { authHeaders } from "./client";
import { type SseMessage, SseParser } from "./sse";
import type { StreamEvent } from "./types";

export type ConnectionState = "connecting" | "live" | "reconnecting" | "closed" | "error";

export interface FollowOptions {
  /** Resume after this offset (-1: from the start). */
  after?: number;
  onEvents: (batch: StreamEvent[]) => void;
  onState?: (state: ConnectionState, detail?: string) => void;
  /** Delay before reconnecting, by attempt number (tests pass 0). */
  backoffMs?: (attempt: number) => number;
  fetchImpl?: typeof fetch;
}

export function followStream(streamId: string, opts: FollowOptions): () => void {
  const controller = new AbortController();
  const fetchImpl = opts.fetchImpl ?? fetch.bind(globalThis);
  const backoff = opts.backoffMs ?? reconnectDelay;
  let last = opts.after ?? -1;

  async function once(): Promise<"ended" | "fatal"> {
    const headers: Record<string, string> = { ...authHeaders(), Accept: "text/event-stream" };
    if (last >= 0) headers["Last-Event-ID"] = String(last);
    const r = await fetchImpl(`/v1/streams/${encodeURIComponent(streamId)}/events/sse`, {
      headers,
      signal: controller.signal,
      cache: "no-store",
    });
    if (r.status === 401 || r.status === 403 || r.status === 404 || r.status === 400) {
      opts.onState?.("error", `HTTP ${r.status}`);
      return "fatal";
    }
    if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
    opts.onState?.("live");
    const parser = new SseParser();
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      deliver(parser.feed(value));
    }
  }

  /** Hands the new records of one chunk to the caller; `last` moves only past records delivered, so a
   * frame that does not parse ends the connection and the resume asks for it again (no gap). */
  function deliver(messages: SseMessage[]): void {
    const batch: StreamEvent[] = [];
    let through = last;
    try {
      for (const m of messages) {
        if (m.id === null) continue;
        const offset = Number(m.id);
        if (!(offset > through)) continue; // already seen: a replay after reconnect overlaps nothing
        batch.push(JSON.parse(m.data) as StreamEvent);
        through = offset;
      }
    } finally {
      if (batch.length) {
        opts.onEvents(batch);
        last = through;
      }
    }
  }

  (async () => {
    let attempt = 0;
    opts.onState?.("connecting");
    while (!controller.signal.aborted) {
      try {
        const before = last;
        if ((await once()) === "fatal") return;
        if (last > before) attempt = 0;
      } catch (e) {
        if (controller.signal.aborted) break;
      }
      if (controller.signal.aborted) break;
      opts.onState?.("reconnecting");
      await pause(backoff(attempt++), controller.signal);
    }
    opts.onState?.("closed");
  })();
  return () => controller.abort();
}

/** Waits `ms`, or less if the follower is stopped meanwhile (a stopped page holds no timer, no closure). */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Exponential to 5 s, each delay drawn from its upper half: after an API restart the open pages come
 * back spread out, not all in the same millisecond. `random` is there for tests. */
export function reconnectDelay(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(250 * 2 ** attempt, 5000);
  return ceiling / 2 + (ceiling / 2) * random();
}
