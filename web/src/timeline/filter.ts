/**
 * The timeline filtered by record kind, kept up to date incrementally: records only ever append, so
 * each update tests only the entries added since the last one. A new record costs one predicate call,
 * however many records the run holds; a new filter (the user ticks a box) is a fresh FilteredIndex and
 * scans the run once.
 */
import type { Kind } from "./describe";
import type { IndexEntry, TimelineStore } from "./store";

/** Tests the record at a position of the store. */
export type Keeps = (store: TimelineStore, position: number) => boolean;

export class FilteredIndex {
  /** Positions in the store of the entries that pass, in offset order. */
  readonly positions: number[] = [];
  private scanned = 0;

  constructor(
    private readonly store: TimelineStore,
    private readonly keeps: Keeps,
  ) {}

  /** Tests the entries appended since the last call; returns how many rows pass in all. */
  update(): number {
    for (const n = this.store.count; this.scanned < n; this.scanned++)
      if (this.keeps(this.store, this.scanned)) this.positions.push(this.scanned);
    return this.positions.length;
  }

  /** The i-th row that passes. */
  row(i: number): IndexEntry {
    return this.store.entry(this.positions[i]);
  }
}

/** The rows of a store with the hidden kinds left out (the whole store, unfiltered, when none is hidden). */
export function kindFilter(store: TimelineStore, hidden: ReadonlySet<Kind>): FilteredIndex | null {
  return hidden.size ? new FilteredIndex(store, (s, i) => !hidden.has(s.kindAt(i))) : null;
}
