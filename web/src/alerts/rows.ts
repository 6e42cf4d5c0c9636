/** An integration's stream (its alerts and the decisions on them) as one row per alert. */
import type { StreamEvent } from "../api/types";

export const DECISIONS: Record<string, string> = {
  "alert.run_started": "run started",
  "alert.attached": "attached to its run",
  "alert.queued": "queued (rate limit)",
  "alert.ignored": "ignored",
};

export interface AlertRow {
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
export function alertRows(records: StreamEvent[]): AlertRow[] {
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
