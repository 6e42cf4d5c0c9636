import { useEffect, useMemo, useState, useSyncExternalStore } from "react";
import { api } from "../api/client";
import { type ConnectionState, followStream } from "../api/follow";
import type { EventsPage, StreamEvent } from "../api/types";
import { TimelineStore } from "./store";

/** Follows a stream live into a TimelineStore; `onBatch` sees each new batch whole (e.g. to refresh a
 * run, or fold a transcript): the store itself keeps only the newest records' payloads. */
export function useTimeline(streamId: string, onBatch?: (batch: StreamEvent[]) => void) {
  const store = useMemo(() => new TimelineStore({ fetchRecord: (offset) => fetchRecord(streamId, offset) }), [streamId]);
  const [connection, setConnection] = useState<ConnectionState>("connecting");
  useEffect(() => {
    return followStream(streamId, {
      after: store.lastOffset,
      onEvents: (batch) => {
        store.append(batch);
        onBatch?.(batch);
      },
      onState: (s) => setConnection(s),
    });
  }, [store]); // eslint-disable-line
  const version = useSyncExternalStore(store.subscribe, store.getVersion);
  return { store, version, connection };
}

/** One record of a stream by offset: the REST page that starts right after the offset before it. */
async function fetchRecord(streamId: string, offset: number): Promise<StreamEvent | null> {
  const page = await api<EventsPage>(`/v1/streams/${encodeURIComponent(streamId)}/events?after=${offset - 1}&limit=1`);
  return page.items[0] ?? null;
}
