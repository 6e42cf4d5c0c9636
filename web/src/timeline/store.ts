/**
 * A stream's records in offset order, appended in batches. Readers subscribe to a version number
 * (useSyncExternalStore); notifications are coalesced to one per animation frame, so a burst of
 * thousands of records costs one render of the visible rows, never one render per record.
 */
import type { StreamEvent } from "../api/types";

export class TimelineStore {
  readonly records: StreamEvent[] = [];
  /** The sum of the offsets held: with the count, a cheap check that nothing is missing or doubled. */
  offsetSum = 0;
  private listeners = new Set<() => void>();
  private version = 0;
  private scheduled = false;

  constructor(private schedule: (fn: () => void) => void = defaultSchedule) {}

  get lastOffset(): number {
    return this.records.length ? this.records[this.records.length - 1].offset : -1;
  }

  /** Appends the records past the last offset held; returns how many were new. */
  append(batch: StreamEvent[]): number {
    let added = 0;
    for (const e of batch) {
      if (e.offset > this.lastOffset) {
        this.records.push(e);
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

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getVersion = (): number => this.version;

  private notify(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(() => {
      this.scheduled = false;
      for (const l of this.listeners) l();
    });
  }
}

function defaultSchedule(fn: () => void): void {
  if (typeof requestAnimationFrame === "function" && typeof document !== "undefined" && !document.hidden) {
    requestAnimationFrame(() => fn());
  } else setTimeout(fn, 16);
}
