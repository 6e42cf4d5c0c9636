/** One line of text per record for the timeline, and the kind it is filed under. */
import type { StreamEvent } from "../api/types";
import { visible } from "../text/visible";

export type Kind = "command" | "output" | "chat" | "egress" | "test" | "state" | "diff" | "other";

export function kindOf(type: string): Kind {
  if (type === "exec.output") return "output";
  if (type.startsWith("exec.") || type === "sandbox.exec") return "command";
  if (type.startsWith("chat.")) return "chat";
  if (type.startsWith("egress.")) return "egress";
  if (type === "test.result") return "test";
  if (type.startsWith("diff.") || type === "patch.proposed") return "diff";
  if (type.startsWith("run.") || type.startsWith("sandbox.") || type === "review.decided" || type === "merge_request.opened")
    return "state";
  return "other";
}

function text(value: unknown): string {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && "base64" in (value as object)) return "[binary]";
  return value == null ? "" : JSON.stringify(value);
}

/** A record as text, invisible characters made visible (see text/visible.ts). */
export function describe(e: StreamEvent): string {
  return visible(describeRaw(e));
}

function describeRaw(e: StreamEvent): string {
  const p = e.payload ?? {};
  switch (e.type) {
    case "exec.started":
      return `$ ${Array.isArray(p.argv) ? p.argv.join(" ") : text(p.argv)}`;
    case "sandbox.exec":
      return `exec requested: ${Array.isArray(p.argv) ? p.argv.join(" ") : text(p.command ?? p.argv)}`;
    case "exec.output":
      return text(p.data);
    case "exec.finished":
      return `exit ${p.exit_code ?? "?"} in ${Math.round(p.duration_ms ?? 0)} ms${p.timed_out ? " (timed out)" : ""}${p.cancelled ? " (cancelled)" : ""}`;
    case "chat.message":
      return `${p.role}: ${p.text}`;
    case "egress.allowed":
    case "egress.denied":
      return `${e.type === "egress.allowed" ? "allowed" : "denied"} ${p.method ?? ""} ${p.host}:${p.port}${p.reason ? ` (${p.reason})` : ""}`;
    case "test.result":
      return `${p.suite}: ${p.passed} passed, ${p.failed} failed, ${p.skipped} skipped (exit ${p.exit_code ?? "?"})`;
    case "diff.captured":
    case "diff.produced":
      return `diff of ${(p.files ?? []).length} file(s): +${p.additions} -${p.deletions}`;
    case "merge_request.opened":
      return `merge request ${p.url}`;
    case "exec.accepted":
    case "file.accepted":
      return `accepted ${p.command_type ?? "command"} ${p.command_id ?? ""}`;
    case "artifact.stored":
      return `stored ${p.artifact?.name ?? p.artifact?.artifact_id} (${p.artifact?.size ?? "?"} bytes)`;
    case "patch.proposed":
      return `patch proposed: ${(p.files ?? []).join(", ")} (+${p.additions} -${p.deletions})${p.summary ? ` — ${p.summary}` : ""}`;
    case "file.read":
    case "file.written":
      return `${e.type === "file.read" ? "read" : "wrote"} ${p.path}${p.error ? ` (${p.error})` : ` (${p.size} bytes)`}`;
    case "review.decided":
      return `${p.decision} by ${p.reviewer}${p.comment ? `: ${p.comment}` : ""}`;
    default:
      if (e.type.startsWith("run.") && p.state) return `run ${p.state}${p.reason ? `: ${p.reason}` : ""}`;
      if (e.type.startsWith("sandbox.") && p.state) return `sandbox ${p.state}${p.reason ? `: ${p.reason}` : ""}`;
      return JSON.stringify(p).slice(0, 300);
  }
}

/** A record's text as one timeline row: newlines shown as ⏎ (a row is one line high, so a raw newline
 * would hide the rest) and at most `max` characters, so a huge output record costs the row nothing. */
export function oneLine(text: string, max = 500): string {
  return (text.length > max ? text.slice(0, max) : text).replace(/\r?\n/g, "⏎ ");
}
