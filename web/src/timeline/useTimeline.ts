import { useEffect, useMemo, useState, useSyncExternalStore } from "react";
import { type ConnectionState, followStream } from "../api/follow";
import type { StreamEvent } from "../api/types";
import { TimelineStore } from "./store";

/** Follows a stream live into a TimelineStore; `onBatch` sees each new batch (e.g. to refresh a run). */
export function useTimeline(streamId: string, onBatch?: (batch: StreamEvent[]) => void) {
  const store = useMemo(() => new TimelineStore(), [streamId]);
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
