/**
 * A stream's records in offset order, appended in batches, held so that a 100k-record run costs
 * memory for its rows, not for its payloads: every record leaves a compact index entry (offset, type,
 * time, kind and the one-line label its row shows), and only the newest `keep` records keep their
 * whole payload. An older record is fetched from the REST API when it is selected (`load`), and a few
 * of those are cached. Scrolling needs no fetch: a row shows only its index entry.
 *
 * Readers subscribe to a version number (useSyncExternalStore); notifications are coalesced to one per
 * animation frame, so a burst of thousands of records costs one render of the visible rows.
 */
import type { StreamEvent } from "../api/types";
import { describe, type Kind, kindOf, oneLine } from "./describe";

/** What a timeline row needs of a record: everything but its payload. */
export interface IndexEntry {
  readonly offset: number;
  readonly type: string;
  readonly kind: Kind;
  /** `HH:MM:SS.mmm` of occurred_at. */
  readonly time: string;
  /** The row's text: one line, at most LABEL_CHARS characters. */
  readonly label: string;
}

export type FetchRecord = (offset: number) => Promise<StreamEvent | null>;

export interface StoreOptions {
  /** How many of the newest records keep their payload. */
  keep?: number;
  /** How many older records fetched on demand stay cached. */
  cached?: number;
  /** Reads one record by offset (the REST API in the app); without it an old record cannot be loaded. */
  fetchRecord?: FetchRecord;
  schedule?: (fn: () => void) => void;
}

/** A row is ~150 characters wide on a wide screen; the whole text is in the detail pane. */
export const LABEL_CHARS = 200;

export class TimelineStore {
  /** The sum of the offsets held: with the count, a cheap check that nothing is missing or doubled. */
  offsetSum = 0;
  private readonly index: IndexEntry[] = [];
  /** The newest `keep` records, whole: record i (in arrival order) sits at i % keep. */
  private readonly recent: StreamEvent[] = [];
  /** Older records fetched on demand, least recently used first. */
  private readonly fetched = new Map<number, StreamEvent>();
  private readonly loading = new Map<number, Promise<StreamEvent | null>>();
  /** One string per record type, shared by every entry of that type. */
  private readonly types = new Map<string, string>();
  private readonly keep: number;
  private readonly cached: number;
  private readonly fetchRecord?: FetchRecord;
  private readonly schedule: (fn: () => void) => void;
  private listeners = new Set<() => void>();
  private version = 0;
  private scheduled = false;

  constructor(opts: StoreOptions | ((fn: () => void) => void) = {}) {
    const o = typeof opts === "function" ? { schedule: opts } : opts;
    this.keep = o.keep ?? 2000;
    this.cached = o.cached ?? 200;
    this.fetchRecord = o.fetchRecord;
    this.schedule = o.schedule ?? defaultSchedule;
  }

  get count(): number {
    return this.index.length;
  }

  get lastOffset(): number {
    return this.index.length ? this.index[this.index.length - 1].offset : -1;
  }

  /** The index entry of the i-th record (0 = oldest). */
  entry(i: number): IndexEntry {
    return this.index[i];
  }

  /** How many whole records are in memory (the newest `keep` plus those fetched on demand). */
  get payloadsHeld(): number {
    return Math.min(this.index.length, this.keep) + this.fetched.size;
  }

  /** The position of `offset` in the index, or -1 (binary search: offsets ascend). */
  position(offset: number): number {
    let lo = 0;
    let hi = this.index.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const o = this.index[mid].offset;
      if (o === offset) return mid;
      if (o < offset) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Appends the records past the last offset held; returns how many were new. */
  append(batch: StreamEvent[]): number {
    let added = 0;
    for (const e of batch) {
      if (e.offset > this.lastOffset) {
        this.recent[this.index.length % this.keep] = e;
        this.index.push(this.entryOf(e));
        this.offsetSum += e.offset;
        added++;
      }
    }
    if (added) {
      this.version++;
      this.notify();
    }
    return added;
  }

  /** The whole record at `offset` if it is in memory. */
  get(offset: number): StreamEvent | undefined {
    const i = this.position(offset);
    if (i >= 0 && i >= this.index.length - this.keep) return this.recent[i % this.keep];
    const old = this.fetched.get(offset);
    if (old) {
      this.fetched.delete(offset); // most recently used now
      this.fetched.set(offset, old);
    }
    return old;
  }

  /** The whole record at `offset`, fetched when only its index entry is held (one request per offset at a time). */
  load(offset: number): Promise<StreamEvent | null> {
    const held = this.get(offset);
    if (held) return Promise.resolve(held);
    const pending = this.loading.get(offset);
    if (pending) return pending;
    if (!this.fetchRecord) return Promise.resolve(null);
    const p = this.fetchRecord(offset)
      .then((e) => {
        if (e && e.offset === offset) {
          this.fetched.set(offset, e);
          if (this.fetched.size > this.cached) this.fetched.delete(this.fetched.keys().next().value as number);
        }
        return e && e.offset === offset ? e : null;
      })
      .finally(() => this.loading.delete(offset));
    this.loading.set(offset, p);
    return p;
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getVersion = (): number => this.version;

  private entryOf(e: StreamEvent): IndexEntry {
    let type = this.types.get(e.type);
    if (type === undefined) this.types.set(e.type, (type = e.type));
    return { offset: e.offset, type, kind: kindOf(type), time: e.occurred_at.slice(11, 23), label: compactLabel(e) };
  }

  private notify(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(() => {
      this.scheduled = false;
      for (const l of this.listeners) l();
    });
  }
}

/**
 * A row's label as a string of its own: a slice of a long string keeps the whole parent alive in V8
 * (a sliced string), which would keep every dropped payload's output text in memory through its label.
 */
function compactLabel(e: StreamEvent): string {
  const text = describe(e);
  const line = oneLine(text, LABEL_CHARS);
  // a short text is the label itself; a cut one is copied (slicing a concatenation flattens it into a fresh string)
  return text.length > LABEL_CHARS ? (" " + line).slice(1) : line;
}

function defaultSchedule(fn: () => void): void {
  if (typeof requestAnimationFrame === "function" && typeof document !== "undefined" && !document.hidden) {
    requestAnimationFrame(() => fn());
  } else setTimeout(fn, 16);
}
