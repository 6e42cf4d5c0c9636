import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../api/types";
import { alertRows } from "./rows";

let offset = 0;
const rec = (type: string, payload: Record<string, unknown>, causation: string | null = null): StreamEvent => ({
  offset: offset++, partition: 0, event_id: `e${offset}`, type, stream_id: "int-1", sandbox_id: null,
  occurred_at: `2026-01-01T00:00:0${offset}Z`, actor: "alerts", causation_id: causation, correlation_id: null, payload,
});

describe("alertRows", () => {
  it("pairs each received alert with its decision and run, newest first", () => {
    const rows = alertRows([
      rec("alert.receive", { alert_id: "1", title: "boom" }),
      rec("alert.received", { alert_id: "1", title: "boom", project: "calc" }, "cmd-1"),
      rec("alert.run_started", { alert_event_id: "cmd-1", issue_id: "1", project: "calc", run_id: "run-a", reason: null }, "cmd-1"),
      rec("alert.received", { alert_id: "1", title: "boom again", project: "calc" }, "cmd-2"),
      rec("alert.attached", { alert_event_id: "cmd-2", issue_id: "1", project: "calc", run_id: "run-a", reason: null }, "cmd-2"),
      rec("alert.received", { alert_id: "2", title: "new", project: "calc" }, "cmd-3"),
    ]);
    expect(rows.map((r) => [r.title, r.decision, r.runId])).toEqual([
      ["new", null, null],
      ["boom again", "alert.attached", "run-a"],
      ["boom", "alert.run_started", "run-a"],
    ]);
  });

  it("shows a decision whose alert.received it has not seen (a queued alert started later)", () => {
    const [row] = alertRows([rec("alert.run_started", { alert_event_id: "cmd-9", issue_id: "9", project: "calc", run_id: "run-b" })]);
    expect(row).toMatchObject({ issue: "9", decision: "alert.run_started", runId: "run-b" });
  });
});
