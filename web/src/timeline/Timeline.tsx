/**
 * The virtualised timeline. Rows have one fixed height, so the rows in view are found by arithmetic
 * (no per-row measuring, nothing proportional to the record count per frame): a 100k-record run
 * holds ~50 rows in the DOM, and a burst of records costs one render of those. A row shows one line
 * from the store's compact index; selecting it shows the whole record beside the list (fetched when
 * the store no longer holds its payload). A kind filter is updated incrementally as records arrive.
 * It follows the tail while the user is at the bottom and stays put when they scroll up.
 */
import { memo, useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import type { ConnectionState } from "../api/follow";
import type { StreamEvent } from "../api/types";
import { visible } from "../text/visible";
import { describe, type Kind, oneLine } from "./describe";
import { kindFilter } from "./filter";
import type { IndexEntry, TimelineStore } from "./store";

const ROW = 24;
const OVERSCAN = 10;
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
  const [selected, setSelected] = useState<number | null>(null);
  // a new filter scans the run once; after that each render tests only the records added since
  const filter = useMemo(() => kindFilter(store, hidden), [store, hidden]);
  const total = filter ? filter.update() : store.count;
  const rowAt = (i: number): IndexEntry => (filter ? filter.row(i) : store.entry(i));
  const parent = useRef<HTMLDivElement>(null);
  const follow = useRef(true);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewport, setViewport] = useState(height);
  useLayoutEffect(() => {
    const el = parent.current;
    if (!el) return;
    setViewport(el.clientHeight);
    if (follow.current) el.scrollTop = el.scrollHeight;
  }, [version, total]);
  const first = Math.max(0, Math.floor(scrollTop / ROW) - OVERSCAN);
  const last = Math.min(total, Math.ceil((scrollTop + viewport) / ROW) + OVERSCAN);
  const visible: IndexEntry[] = [];
  for (let i = first; i < last; i++) visible.push(rowAt(i));
  return (
    <div className="flex flex-col gap-2">
      <div className="flex flex-wrap items-center gap-3 text-sm">
        <span role="status" aria-live="polite" data-testid="connection" data-connection={connection} className="font-medium">
          {connection === "live" ? "● live" : connection}
        </span>
        <span data-testid="timeline-count" data-count={store.count} data-last-offset={store.lastOffset} data-offset-sum={store.offsetSum}>
          {store.count.toLocaleString()} records{store.count ? `, last offset ${store.lastOffset}` : ""}
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
      <div className="flex gap-3">
        <div
          ref={parent}
          role="log"
          aria-label="Timeline"
          tabIndex={0}
          className="min-w-0 flex-1 overflow-auto rounded border border-slate-300 bg-white font-mono text-xs dark:border-slate-700 dark:bg-slate-900"
          style={{ height }}
          onScroll={(e) => {
            const el = e.currentTarget;
            follow.current = el.scrollHeight - el.scrollTop - el.clientHeight < ROW * 2;
            setScrollTop(el.scrollTop);
          }}
        >
          <div style={{ height: total * ROW, position: "relative" }}>
            {visible.map((e, i) => (
              <Row key={e.offset} {...e} top={(first + i) * ROW} selected={selected === e.offset} onSelect={setSelected} />
            ))}
          </div>
        </div>
        {selected !== null && <Detail store={store} offset={selected} onClose={() => setSelected(null)} height={height} />}
      </div>
    </div>
  );
}

/** One row; its props are plain values (an entry's fields), so a row already in view renders once. */
const Row = memo(function Row(props: IndexEntry & { top: number; selected: boolean; onSelect: (offset: number) => void }) {
  const { top, selected, onSelect, ...entry } = props;
  return (
    <button
      type="button"
      data-offset={entry.offset}
      data-type={entry.type}
      aria-pressed={selected}
      onClick={() => onSelect(entry.offset)}
      className={`absolute left-0 flex w-full gap-3 border-b border-slate-100 px-2 text-left hover:bg-slate-100 focus-visible:outline-2 focus-visible:outline-sky-600 dark:border-slate-800 dark:hover:bg-slate-800 ${selected ? "bg-sky-50 dark:bg-sky-950" : ""}`}
      style={{ top, height: ROW, lineHeight: `${ROW - 1}px` }}
    >
      <span className="w-14 shrink-0 text-right text-slate-600 dark:text-slate-400">{entry.offset}</span>
      <span className="w-20 shrink-0 text-slate-600 dark:text-slate-400">{entry.time}</span>
      <span className={`w-40 shrink-0 truncate font-semibold ${KIND_LOOK[entry.kind]}`}>{entry.type}</span>
      <span className="min-w-0 flex-1 truncate whitespace-pre">{oneLine(entry.label)}</span>
    </button>
  );
});

/** The whole record at `offset`: from memory when held, else fetched (an old record of a long run). */
function useRecord(store: TimelineStore, offset: number): { event?: StreamEvent; error?: string } {
  const [state, setState] = useState<{ offset: number; event?: StreamEvent; error?: string }>(() => ({ offset, event: store.get(offset) }));
  useEffect(() => {
    const held = store.get(offset);
    setState({ offset, event: held });
    if (held) return;
    let live = true;
    store.load(offset).then(
      (e) => live && setState(e ? { offset, event: e } : { offset, error: `record ${offset} is not in this stream` }),
      (err) => live && setState({ offset, error: String(err?.message ?? err) }),
    );
    return () => {
      live = false;
    };
  }, [store, offset]);
  return state.offset === offset ? state : {};
}

function Detail({ store, offset, onClose, height }: { store: TimelineStore; offset: number; onClose: () => void; height: number }) {
  const { event, error } = useRecord(store, offset);
  const at = event ? -1 : store.position(offset);
  const entry = at >= 0 ? store.entry(at) : null;
  return (
    <aside aria-label={`Record ${offset}`} aria-busy={!event && !error} className="w-[28rem] shrink-0 overflow-auto rounded border border-slate-300 bg-white p-3 text-xs dark:border-slate-700 dark:bg-slate-900" style={{ height }}>
      <div className="mb-2 flex items-center justify-between">
        <h3 className="font-semibold">{event?.type ?? entry?.type} · offset {offset}</h3>
        <button type="button" onClick={onClose} className="rounded border border-slate-400 px-2 py-0.5 focus-visible:outline-2 focus-visible:outline-sky-600">Close</button>
      </div>
      {error && <p role="alert" className="text-red-700 dark:text-red-300">{error}</p>}
      {!event && !error && <p>Loading the record…</p>}
      {event && (
        <>
          <p className="mb-2 text-slate-700 dark:text-slate-300">{event.occurred_at} · {event.actor}</p>
          <pre className="whitespace-pre-wrap break-all font-mono">{describe(event)}</pre>
          <details className="mt-2">
            <summary className="cursor-pointer">Payload</summary>
            <pre className="whitespace-pre-wrap break-all font-mono">{visible(JSON.stringify(event.payload, null, 2))}</pre>
          </details>
        </>
      )}
    </aside>
  );
}
