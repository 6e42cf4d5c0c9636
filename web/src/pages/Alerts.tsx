import { useQuery } from "@tanstack/react-query";
import { api } from "../api/client";
import type { Integration, Page, StreamEvent } from "../api/types";
import { alertRows, DECISIONS } from "../alerts/rows";
import { Card, ErrorText, StateBadge } from "../components/ui";
import { Link } from "../router";
import { visible } from "../text/visible";

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
  const list = alerts.data ? alertRows(alerts.data) : [];
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
                <td className="p-2 [overflow-wrap:anywhere]">{visible(a.title)}{a.title !== a.issue && <span className="ml-1 font-mono text-xs">({a.issue})</span>}</td>
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
