/**
 * A stream's records in offset order, appended in batches, held so that a 100k-record run costs
 * memory for its rows, not for its payloads: every record leaves a compact index entry (offset, type,
 * time and the start of the text its row shows), and only the newest `keep` records keep their whole
 * payload. An older record is fetched from the REST API when it is selected (`load`), and a few of
 * those are cached. Scrolling needs no fetch: a row shows only its index entry.
 *
 * The index is columnar (typed arrays for offsets, type ids and times; one array of labels), so an
 * entry costs ~17 bytes plus its label, and a label is the record's own text when that is short (an
 * output chunk's string, shared with the payload while it is held). `entry(i)` builds the object a
 * row reads; only the rows in view ask for one.
 *
 * Readers subscribe to a version number (useSyncExternalStore); notifications are coalesced to one per
 * animation frame, so a burst of thousands of records costs one render of the visible rows.
 */
import type { StreamEvent } from "../api/types";
import { describe, type Kind, kindOf } from "./describe";

/** What a timeline row needs of a record: everything but its payload. */
export interface IndexEntry {
  readonly offset: number;
  readonly type: string;
  readonly kind: Kind;
  /** `HH:MM:SS.mmm` of occurred_at. */
  readonly time: string;
  /** The start of the record's text (at most LABEL_CHARS characters; newlines not yet replaced). */
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
  private n = 0;
  private offsets = new Float64Array(1024);
  private typeIds = new Uint16Array(1024);
  /** Milliseconds since midnight of occurred_at (-1 when it does not parse). */
  private times = new Int32Array(1024);
  private readonly labels: string[] = [];
  private readonly types: string[] = [];
  private readonly kinds: Kind[] = [];
  private readonly typeIdOf = new Map<string, number>();
  /** The newest `keep` records, whole: record i (in arrival order) sits at i % keep. */
  private readonly recent: StreamEvent[] = [];
  /** Older records fetched on demand, least recently used first. */
  private readonly fetched = new Map<number, StreamEvent>();
  private readonly loading = new Map<number, Promise<StreamEvent | null>>();
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
    return this.n;
  }

  get lastOffset(): number {
    return this.n ? this.offsets[this.n - 1] : -1;
  }

  /** The index entry of the i-th record (0 = oldest). */
  entry(i: number): IndexEntry {
    const t = this.typeIds[i];
    return { offset: this.offsets[i], type: this.types[t], kind: this.kinds[t], time: clock(this.times[i]), label: this.labels[i] };
  }

  /** The kind of the i-th record (what the kind filter tests, without building an entry). */
  kindAt(i: number): Kind {
    return this.kinds[this.typeIds[i]];
  }

  /** How many whole records are in memory (the newest `keep` plus those fetched on demand). */
  get payloadsHeld(): number {
    return Math.min(this.n, this.keep) + this.fetched.size;
  }

  /** The position of `offset` in the index, or -1 (binary search: offsets ascend). */
  position(offset: number): number {
    let lo = 0;
    let hi = this.n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const o = this.offsets[mid];
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
        this.push(e);
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
    if (i >= 0 && i >= this.n - this.keep) return this.recent[i % this.keep];
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

  private push(e: StreamEvent): void {
    const i = this.n;
    if (i === this.offsets.length) this.grow();
    let t = this.typeIdOf.get(e.type);
    if (t === undefined) {
      t = this.types.length;
      this.types.push(e.type);
      this.kinds.push(kindOf(e.type));
      this.typeIdOf.set(e.type, t);
    }
    this.offsets[i] = e.offset;
    this.typeIds[i] = t;
    this.times[i] = msOfDay(e.occurred_at);
    this.labels.push(label(e));
    this.recent[i % this.keep] = e;
    this.n++;
  }

  private grow(): void {
    const size = this.offsets.length * 2;
    const offsets = new Float64Array(size);
    offsets.set(this.offsets);
    this.offsets = offsets;
    const typeIds = new Uint16Array(size);
    typeIds.set(this.typeIds);
    this.typeIds = typeIds;
    const times = new Int32Array(size);
    times.set(this.times);
    this.times = times;
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
 * The start of a record's text, as a string of its own: a slice of a long string keeps the whole
 * parent alive in V8 (a sliced string), which would keep a dropped payload's text in memory through
 * its label. A short text is kept as it is (for an output chunk, the payload's own string).
 */
function label(e: StreamEvent): string {
  const text = describe(e);
  return text.length > LABEL_CHARS ? (" " + text.slice(0, LABEL_CHARS)).slice(1) : text; // slicing a concatenation flattens it into a fresh string
}

/** `2026-01-01T08:00:01.234567Z` -> milliseconds since midnight (-1 when it is not that shape). */
function msOfDay(iso: string): number {
  const h = Number(iso.slice(11, 13));
  const m = Number(iso.slice(14, 16));
  const s = Number(iso.slice(17, 19));
  const ms = iso[19] === "." ? Number(iso.slice(20, 23).padEnd(3, "0")) : 0;
  const v = ((h * 60 + m) * 60 + s) * 1000 + ms;
  return Number.isFinite(v) ? v : -1;
}

function clock(ms: number): string {
  if (ms < 0) return "";
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(Math.floor(ms / 3_600_000))}:${two(Math.floor(ms / 60_000) % 60)}:${two(Math.floor(ms / 1000) % 60)}.${String(ms % 1000).padStart(3, "0")}`;
}

function defaultSchedule(fn: () => void): void {
  if (typeof requestAnimationFrame === "function" && typeof document !== "undefined" && !document.hidden) {
    requestAnimationFrame(() => fn());
  } else setTimeout(fn, 16);
}
