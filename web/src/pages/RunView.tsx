import * as Dialog from "@radix-ui/react-dialog";
import * as Tabs from "@radix-ui/react-tabs";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { lazy, Suspense, useEffect, useRef, useState } from "react";
import { keepFocusOnPage, returnFocus } from "../a11y/focus";
import { api, authHeaders, idempotencyKey } from "../api/client";
import { ENDED_RUN_STATES, type ArtifactRef, type Attempt, type Run, type RunDetail, type StreamEvent } from "../api/types";
import { ConfirmButton } from "../components/ConfirmButton";
import { Button, Card, ErrorText, StateBadge, TextArea } from "../components/ui";
import { Link } from "../router";
import { Timeline } from "../timeline/Timeline";
import { useTimeline } from "../timeline/useTimeline";
import { visible } from "../text/visible";

const DiffView = lazy(() => import("../diff/DiffView"));
const tab = "rounded-t border-b-2 border-transparent px-3 py-1.5 text-sm data-[state=active]:border-sky-700 data-[state=active]:font-semibold focus-visible:outline-2 focus-visible:outline-sky-600 dark:data-[state=active]:border-sky-400";

/** A run: its live timeline, changes, tests and artifacts, and the reviewer's actions. */
export default function RunView({ id }: { id: string }) {
  const client = useQueryClient();
  // the state as the run's own records tell it, live; the detail (from the projection, which may
  // be a moment behind the live tail) is fetched again until it has caught up with it
  const [live, setLive] = useState<{ state: string; attempt: number; seen: number } | null>(null);
  const run = useQuery({
    queryKey: ["run", id],
    queryFn: () => api<RunDetail>(`/v1/runs/${encodeURIComponent(id)}`),
    refetchInterval: (q) => (live && !caughtUp(q.state.data, live) ? 300 : false),
  });
  const { store, version, connection } = useTimeline(id, (batch) => {
    const last = lastRunState(batch);
    if (last) setLive((prev) => ({ ...last, seen: (prev?.seen ?? 0) + 1 }));
    if (batch.some((e) => DETAIL_RECORDS.test(e.type))) client.invalidateQueries({ queryKey: ["run", id] });
  });
  const r = run.data ? { ...run.data, ...(live && live.attempt >= run.data.attempt ? { state: live.state, attempt: live.attempt } : {}) } : undefined;
  const attempt: Attempt | undefined = r?.attempts[r.attempts.length - 1];
  const mr = r?.attempts.map((a) => a.merge_request).filter(Boolean).pop();
  return (
    <div className="flex flex-col gap-4">
      <ErrorText error={run.error} />
      <Card>
        <div className="flex flex-wrap items-start gap-3">
          <div className="min-w-0 flex-1">
            <h1 className="text-xl font-bold [overflow-wrap:anywhere]">{visible(r?.title || id)}</h1>
            <p className="font-mono text-xs text-slate-700 dark:text-slate-300">{id} · {r?.repository} · attempt {r?.attempt}</p>
            {r?.reason && <p className="text-sm [overflow-wrap:anywhere]">Reason: {visible(r.reason)}</p>}
          </div>
          {r && <StateBadge state={r.state} />}
        </div>
        {mr && (
          <p className="mt-2 text-sm">
            Merge request: <a data-testid="mr-link" href={mr.url} className="font-mono text-sky-800 underline dark:text-sky-300" target="_blank" rel="noreferrer">{mr.url}</a> ({mr.branch} → {mr.base})
          </p>
        )}
        {r && <Actions run={r} />}
      </Card>
      <Tabs.Root defaultValue="timeline">
        <Tabs.List aria-label="Run views" className="flex gap-1 border-b border-slate-300 dark:border-slate-700">
          <Tabs.Trigger className={tab} value="timeline">Timeline</Tabs.Trigger>
          <Tabs.Trigger className={tab} value="changes">Changes</Tabs.Trigger>
          <Tabs.Trigger className={tab} value="tests">Tests</Tabs.Trigger>
          <Tabs.Trigger className={tab} value="artifacts">Artifacts ({r?.artifacts.length ?? 0})</Tabs.Trigger>
          <Tabs.Trigger className={tab} value="request">Request</Tabs.Trigger>
        </Tabs.List>
        <Tabs.Content value="timeline" className="pt-3"><Timeline store={store} version={version} connection={connection} /></Tabs.Content>
        <Tabs.Content value="changes" className="pt-3"><Changes attempt={attempt} /></Tabs.Content>
        <Tabs.Content value="tests" className="pt-3"><Tests attempt={attempt} /></Tabs.Content>
        <Tabs.Content value="artifacts" className="pt-3"><Artifacts items={r?.artifacts ?? []} /></Tabs.Content>
        <Tabs.Content value="request" className="pt-3"><pre className="whitespace-pre-wrap text-sm [overflow-wrap:anywhere]">{visible(r?.spec ?? "")}</pre>
          <p className="mt-2 text-sm"><Link className="underline" href={`/audit/${id}`}>Audit this stream</Link></p>
        </Tabs.Content>
      </Tabs.Root>
    </div>
  );
}

const DETAIL_RECORDS = /^(run\.|diff\.|test\.|patch\.|merge_request\.|review\.|artifact\.)/;

function lastRunState(batch: StreamEvent[]): { state: string; attempt: number } | null {
  for (let i = batch.length - 1; i >= 0; i--) {
    const e = batch[i];
    if (e.type.startsWith("run.") && typeof e.payload?.state === "string" && e.type === `run.${e.payload.state}`)
      return { state: e.payload.state, attempt: e.payload.attempt ?? 1 };
  }
  return null;
}

function caughtUp(detail: RunDetail | undefined, live: { state: string; attempt: number }): boolean {
  if (!detail) return false;
  const a = detail.attempts.find((x) => x.attempt === live.attempt);
  const needsMr = live.state === "merged";
  return detail.state === live.state && detail.attempt === live.attempt && (!needsMr || !!a?.merge_request);
}

function Changes({ attempt }: { attempt?: Attempt }) {
  const diff = attempt?.diffs[attempt.diffs.length - 1];
  // a large diff travels as an artifact; its text is fetched on demand
  const stored = diff && !diff.patch ? diff.artifact?.artifact_id : undefined;
  const fetched = useQuery({
    queryKey: ["artifact-text", stored],
    enabled: !!stored,
    queryFn: async () => {
      const r = await fetch(`/v1/artifacts/${encodeURIComponent(stored!)}`, { headers: authHeaders() });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.text();
    },
  });
  const patch = diff?.patch ?? fetched.data;
  if (!diff) return <p>No changes yet.</p>;
  if (!patch) return fetched.error ? <ErrorText error={fetched.error} /> : <p>Loading diff…</p>;
  return (
    <Suspense fallback={<p>Loading diff…</p>}>
      <p className="mb-2 text-sm">Attempt {attempt?.attempt}: {diff.files.length} file(s), +{diff.additions} −{diff.deletions}</p>
      <DiffView patch={patch} />
    </Suspense>
  );
}

function Tests({ attempt }: { attempt?: Attempt }) {
  if (!attempt?.test_results.length) return <p>No test results yet.</p>;
  return (
    <table className="text-sm" aria-label="Test results">
      <thead><tr className="text-left">{["Suite", "Passed", "Failed", "Skipped", "Exit", "Source"].map((h) => <th key={h} scope="col" className="p-2">{h}</th>)}</tr></thead>
      <tbody>
        {attempt.test_results.map((t, i) => (
          <tr key={i}><td className="p-2">{t.suite}</td><td className="p-2">{t.passed}</td><td className="p-2">{t.failed}</td><td className="p-2">{t.skipped}</td><td className="p-2">{t.exit_code}</td><td className="p-2">{t.source}</td></tr>
        ))}
      </tbody>
    </table>
  );
}

function Artifacts({ items }: { items: ArtifactRef[] }) {
  if (!items.length) return <p>No artifacts.</p>;
  return (
    <ul className="flex flex-col gap-1 text-sm">
      {items.map((a) => (
        <li key={a.artifact_id} className="flex gap-3">
          <Button onClick={() => download(a)}>Download</Button>
          <span className="font-mono [overflow-wrap:anywhere]">{visible(a.name ?? a.artifact_id)}</span>
          <span>{a.size.toLocaleString()} bytes</span>
          <span className="text-slate-600 dark:text-slate-300">{a.content_type}</span>
        </li>
      ))}
    </ul>
  );
}

/** Artifacts need the API key, so they are fetched and handed to the browser as a blob. */
async function download(a: ArtifactRef) {
  const r = await fetch(`/v1/artifacts/${encodeURIComponent(a.artifact_id)}`, { headers: authHeaders() });
  if (!r.ok) return alert(`Download failed: HTTP ${r.status}`);
  const url = URL.createObjectURL(await r.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: a.name ?? a.artifact_id });
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function Actions({ run }: { run: Run }) {
  const client = useQueryClient();
  const [guidance, setGuidance] = useState("");
  const [open, setOpen] = useState(false);
  const rerunButton = useRef<HTMLButtonElement>(null);
  const act = useMutation({
    mutationFn: ({ path, body }: { path: string; body: unknown }) =>
      api(`/v1/runs/${encodeURIComponent(run.id)}/${path}`, { method: "POST", json: body, headers: { "Idempotency-Key": idempotencyKey() } }),
    onSettled: () => client.invalidateQueries({ queryKey: ["run", run.id] }),
  });
  const reviewable = run.state === "awaiting_review" && !act.isPending;
  const ended = ENDED_RUN_STATES.includes(run.state);
  // the button pressed goes disabled (pending, then approved...): focus stays on the page, not <body>
  const mounted = useRef(false);
  useEffect(() => {
    if (mounted.current) keepFocusOnPage();
    mounted.current = true;
  }, [reviewable, ended]);
  return (
    <div className="mt-3 flex flex-wrap items-center gap-2">
      <Button variant="primary" disabled={!reviewable || act.isPending} onClick={() => act.mutate({ path: "review", body: { decision: "approve" } })}>Approve</Button>
      <ConfirmButton
        label="Reject"
        variant="danger"
        title="Reject this run?"
        description="The run ends as rejected and its change is not merged. A rejected run cannot be reopened."
        keepLabel="Keep reviewing"
        disabled={!reviewable || act.isPending}
        onConfirm={() => act.mutate({ path: "review", body: { decision: "reject" } })}
      />
      <Dialog.Root open={open} onOpenChange={setOpen}>
        <Dialog.Trigger asChild><Button ref={rerunButton} disabled={!reviewable}>Rerun with guidance…</Button></Dialog.Trigger>
        <Dialog.Portal>
          <Dialog.Overlay className="fixed inset-0 bg-black/50" />
          <Dialog.Content
            // back to the button that opened it; to the run's heading when a rerun just disabled it
            onCloseAutoFocus={(e) => { e.preventDefault(); returnFocus(rerunButton.current); }}
            className="fixed left-1/2 top-1/3 w-[32rem] max-w-[95vw] -translate-x-1/2 rounded-lg bg-white p-4 text-slate-900 shadow-xl dark:bg-slate-900 dark:text-slate-100">
            <Dialog.Title className="text-lg font-bold">Rerun with guidance</Dialog.Title>
            <Dialog.Description className="mb-3 text-sm">The agent starts a new attempt in this run with your guidance.</Dialog.Description>
            <form onSubmit={(e) => { e.preventDefault(); act.mutate({ path: "review", body: { decision: "rerun", guidance, comment: guidance } }); setOpen(false); }} className="flex flex-col gap-3">
              <TextArea label="Guidance" required rows={5} value={guidance} onChange={(e) => setGuidance(e.target.value)} />
              <div className="flex justify-end gap-2">
                <Dialog.Close asChild><Button>Close</Button></Dialog.Close>
                <Button type="submit" variant="primary" disabled={!guidance.trim()}>Rerun</Button>
              </div>
            </form>
          </Dialog.Content>
        </Dialog.Portal>
      </Dialog.Root>
      <ConfirmButton
        label="Cancel run"
        title="Cancel this run?"
        description="The agent is stopped, its sandbox ends and the run ends as cancelled. It cannot be resumed."
        keepLabel="Keep the run"
        disabled={ended || run.state === "approved" || act.isPending}
        onConfirm={() => act.mutate({ path: "cancel", body: {} })}
      />
      <ErrorText error={act.error} />
    </div>
  );
}
