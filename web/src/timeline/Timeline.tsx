/**
 * The virtualised timeline: only the rows in view are in the DOM, and a row re-renders only when
 * it is new, so a 100k-record run scrolls and streams smoothly. It follows the tail while the user
 * is at the bottom and stays put when they scroll up.
 */
import { useVirtualizer } from "@tanstack/react-virtual";
import { memo, useEffect, useRef, useState } from "react";
import type { ConnectionState } from "../api/follow";
import type { StreamEvent } from "../api/types";
import { describe, type Kind, kindOf } from "./describe";
import type { TimelineStore } from "./store";

const KINDS: Kind[] = ["command", "output", "chat", "egress", "test", "state", "diff", "other"];
const KIND_LOOK: Record<Kind, string> = {
  command: "text-sky-800 dark:text-sky-300",
  output: "text-slate-700 dark:text-slate-300",
  chat: "text-violet-800 dark:text-violet-300",
  egress: "text-orange-800 dark:text-orange-300",
  test: "text-emerald-800 dark:text-emerald-300",
  state: "text-amber-800 dark:text-amber-300",
  diff: "text-fuchsia-800 dark:text-fuchsia-300",
  other: "text-slate-700 dark:text-slate-300",
};

export function Timeline({ store, version, connection, height = 520 }: { store: TimelineStore; version: number; connection: ConnectionState; height?: number }) {
  const [hidden, setHidden] = useState<Set<Kind>>(new Set());
  const all = store.records;
  const rows = hidden.size ? all.filter((e) => !hidden.has(kindOf(e.type))) : all;
  const parent = useRef<HTMLDivElement>(null);
  const follow = useRef(true);
  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => parent.current,
    estimateSize: () => 28,
    overscan: 12,
    getItemKey: (i) => rows[i].offset,
  });
  useEffect(() => {
    if (follow.current && rows.length) virtualizer.scrollToIndex(rows.length - 1, { align: "end" });
  }, [version, rows.length]); // eslint-disable-line
  let sum = 0;
  for (const e of all) sum += e.offset;
  return (
    <div className="flex flex-col gap-2">
      <div className="flex flex-wrap items-center gap-3 text-sm">
        <span role="status" aria-live="polite" data-testid="connection" data-connection={connection} className="font-medium">
          {connection === "live" ? "● live" : connection}
        </span>
        <span data-testid="timeline-count" data-count={all.length} data-last-offset={store.lastOffset} data-offset-sum={sum}>
          {all.length} records{all.length ? `, last offset ${store.lastOffset}` : ""}
        </span>
        <fieldset className="flex flex-wrap gap-2">
          <legend className="sr-only">Show record kinds</legend>
          {KINDS.map((k) => (
            <label key={k} className="flex items-center gap-1">
              <input type="checkbox" checked={!hidden.has(k)} onChange={() => {
                const next = new Set(hidden);
                if (next.has(k)) next.delete(k); else next.add(k);
                setHidden(next);
              }} />
              {k}
            </label>
          ))}
        </fieldset>
      </div>
      <div
        ref={parent}
        role="log"
        aria-label="Timeline"
        tabIndex={0}
        className="overflow-auto rounded border border-slate-300 bg-white font-mono text-xs dark:border-slate-700 dark:bg-slate-900"
        style={{ height }}
        onScroll={(e) => {
          const el = e.currentTarget;
          follow.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
        }}
      >
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {virtualizer.getVirtualItems().map((v) => (
            <div key={v.key} data-index={v.index} ref={virtualizer.measureElement} style={{ position: "absolute", top: 0, left: 0, width: "100%", transform: `translateY(${v.start}px)` }}>
              <Row event={rows[v.index]} />
            </div>
          ))}
        </div>
      </div>
    </div>
  );
}

const Row = memo(function Row({ event }: { event: StreamEvent }) {
  const kind = kindOf(event.type);
  const text = describe(event);
  return (
    <div data-offset={event.offset} data-type={event.type} className="flex gap-3 border-b border-slate-100 px-2 py-1 dark:border-slate-800">
      <span className="w-14 shrink-0 text-right text-slate-600 dark:text-slate-400" title="offset">{event.offset}</span>
      <span className="w-20 shrink-0 text-slate-600 dark:text-slate-400">{event.occurred_at.slice(11, 23)}</span>
      <span className={`w-40 shrink-0 font-semibold ${KIND_LOOK[kind]}`}>{event.type}</span>
      <span className={`min-w-0 whitespace-pre-wrap break-all ${kind === "output" ? "text-slate-800 dark:text-slate-200" : ""}`}>{text.length > 4000 ? `${text.slice(0, 4000)}…` : text}</span>
    </div>
  );
});
