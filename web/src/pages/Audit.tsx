import { useMutation } from "@tanstack/react-query";
import { useState } from "react";
import { api } from "../api/client";
import type { Verification } from "../api/types";
import { Button, Card, ErrorText, TextInput } from "../components/ui";
import { navigate } from "../router";
import { Timeline } from "../timeline/Timeline";
import { useTimeline } from "../timeline/useTimeline";

/** Any stream's records, and `replay --verify`: Kafka compared with the projection, record by record. */
export default function Audit({ id }: { id?: string }) {
  const [draft, setDraft] = useState(id ?? "");
  return (
    <div className="flex flex-col gap-4">
      <h1 className="text-xl font-bold">Audit</h1>
      <form className="flex items-end gap-2" onSubmit={(e) => { e.preventDefault(); if (draft.trim()) navigate(`/audit/${encodeURIComponent(draft.trim())}`); }}>
        <div className="flex-1"><TextInput label="Stream id (a run or sandbox)" value={draft} onChange={(e) => setDraft(e.target.value)} /></div>
        <Button type="submit" variant="primary">Open</Button>
      </form>
      {id && <AuditStream key={id} id={id} />}
    </div>
  );
}

function AuditStream({ id }: { id: string }) {
  const { store, version, connection } = useTimeline(id);
  const verify = useMutation({ mutationFn: () => api<Verification>(`/v1/streams/${encodeURIComponent(id)}/verify`) });
  const v = verify.data;
  return (
    <>
      <Card>
        <div className="flex items-center gap-3">
          <Button onClick={() => verify.mutate()} disabled={verify.isPending}>Verify against Kafka</Button>
          {v && (
            <p role="status" data-testid="verify-result" data-ok={v.ok} className={v.ok ? "text-emerald-800 dark:text-emerald-300" : "text-red-700 dark:text-red-300"}>
              checked {v.checked} records: {v.differences.length} difference(s)
            </p>
          )}
        </div>
        {v && v.differences.length > 0 && (
          <ul className="mt-2 font-mono text-xs">{v.differences.map((d, i) => <li key={i}>offset {d.offset}: {d.problem}</li>)}</ul>
        )}
        <ErrorText error={verify.error} />
      </Card>
      <Timeline store={store} version={version} connection={connection} />
    </>
  );
}
