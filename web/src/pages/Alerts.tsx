import { useQuery } from "@tanstack/react-query";
import { api } from "../api/client";
import type { Integration, Page, StreamEvent } from "../api/types";
import { Card, ErrorText, StateBadge } from "../components/ui";
import { Link } from "../router";

const DECISIONS: Record<string, string> = {
  "alert.run_started": "run started",
  "alert.attached": "attached to its run",
  "alert.queued": "queued (rate limit)",
  "alert.ignored": "ignored",
};

/** The tenant's integrations (never their secrets: the API shows none) and the alerts each received. */
export default function Alerts() {
  const list = useQuery({ queryKey: ["integrations"], queryFn: () => api<Page<Integration>>("/v1/integrations?limit=500") });
  return (
    <div className="flex flex-col gap-4">
      <h1 className="text-xl font-bold">Alerts</h1>
      <ErrorText error={list.error} />
      {list.data?.items.length === 0 && <p>No integrations. Create one with <code>POST /v1/integrations</code> (see the README's “Alerts become runs”).</p>}
      {list.data?.items.map((i) => <IntegrationAlerts key={i.id} integration={i} />)}
    </div>
  );
}

interface AlertRow {
  alertEventId: string;
  at: string;
  issue: string;
  title: string;
  project: string | null;
  decision: string | null;
  runId: string | null;
  reason: string | null;
}

/** An integration's stream holds its alerts and the decisions on them; one row per alert. */
function rows(records: StreamEvent[]): AlertRow[] {
  const byAlert = new Map<string, AlertRow>();
  for (const e of records) {
    const p = e.payload ?? {};
    if (e.type === "alert.received") {
      byAlert.set(e.causation_id ?? e.event_id, {
        alertEventId: e.causation_id ?? e.event_id,
        at: e.occurred_at,
        issue: String(p.alert_id ?? ""),
        title: String(p.title ?? p.message ?? p.alert_id ?? ""),
        project: p.project ?? null,
        decision: null,
        runId: null,
        reason: null,
      });
    } else if (e.type in DECISIONS) {
      const key = String(p.alert_event_id ?? e.causation_id);
      const row = byAlert.get(key) ?? { alertEventId: key, at: e.occurred_at, issue: String(p.issue_id ?? ""), title: String(p.issue_id ?? ""), project: null, decision: null, runId: null, reason: null };
      Object.assign(row, { decision: e.type, runId: p.run_id ?? row.runId, reason: p.reason ?? null, project: p.project ?? row.project });
      byAlert.set(key, row);
    }
  }
  return [...byAlert.values()].reverse();
}

async function allRecords(streamId: string): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  let after = -1;
  for (;;) {
    const page = await api<{ items: StreamEvent[]; next_after: number | null }>(`/v1/streams/${encodeURIComponent(streamId)}/events?limit=1000&after=${after}`);
    out.push(...page.items);
    if (page.next_after === null) return out;
    after = page.next_after;
  }
}

function IntegrationAlerts({ integration: i }: { integration: Integration }) {
  // an integration that never received anything has no stream yet: a 404 means "no alerts"
  const alerts = useQuery({
    queryKey: ["alerts", i.id],
    queryFn: () => allRecords(i.id).catch((e) => (e?.status === 404 ? [] : Promise.reject(e))),
    refetchInterval: 3000,
  });
  const list = alerts.data ? rows(alerts.data) : [];
  return (
    <Card>
      <h2 className="text-lg font-semibold">{i.name} <span className="text-sm font-normal">({i.kind}, agent {i.agent})</span></h2>
      <p className="text-xs text-slate-700 dark:text-slate-300">
        {i.id} · projects: {Object.entries(i.projects).map(([k, v]) => `${k} → ${v.repository}@${v.base_branch}`).join(", ") || "none"}
        {" · "}API token {i.has_api_token ? "set" : "not set"}
      </p>
      <ErrorText error={alerts.error} />
      {alerts.data && (list.length === 0 ? <p className="mt-2 text-sm">No alerts received.</p> : (
        <table className="mt-2 w-full text-sm" aria-label={`Alerts of ${i.name}`}>
          <thead><tr className="text-left">{["Received", "Issue", "Project", "Decision", "Run"].map((h) => <th key={h} scope="col" className="p-2">{h}</th>)}</tr></thead>
          <tbody>
            {list.map((a) => (
              <tr key={a.alertEventId} data-decision={a.decision ?? "pending"} className="border-t border-slate-200 dark:border-slate-800">
                <td className="p-2"><time dateTime={a.at}>{new Date(a.at).toLocaleString()}</time></td>
                <td className="p-2">{a.title}{a.title !== a.issue && <span className="ml-1 font-mono text-xs">({a.issue})</span>}</td>
                <td className="p-2">{a.project ?? "—"}</td>
                <td className="p-2">{a.decision ? <StateBadge state={DECISIONS[a.decision]} /> : "pending"}{a.reason && <span className="ml-1 text-xs">{a.reason}</span>}</td>
                <td className="p-2 font-mono">{a.runId ? <Link className="text-sky-800 underline dark:text-sky-300" href={`/runs/${a.runId}`}>{a.runId}</Link> : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ))}
    </Card>
  );
}
