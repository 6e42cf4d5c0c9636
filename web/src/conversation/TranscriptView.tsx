/**
 * A conversation's transcript. Each entry is memoised on its item, and the Transcript replaces only
 * the items a batch changed, so a token batch re-renders the one message receiving deltas, not every
 * entry of a long conversation.
 */
import { memo } from "react";
import { visible } from "../text/visible";
import type { Item } from "./transcript";

export function TranscriptView({ items }: { items: readonly Item[] }) {
  return (
    <section aria-label="Transcript" className="flex flex-col gap-2" data-testid="transcript">
      {items.length === 0 && <p>No messages yet.</p>}
      {items.map((item) => <Entry key={item.key} item={item} />)}
    </section>
  );
}

const bubble = "rounded-lg border px-3 py-2 text-sm whitespace-pre-wrap break-words";

export const Entry = memo(function Entry({ item }: { item: Item }) {
  switch (item.kind) {
    case "user":
      return <div data-kind="user" className={`${bubble} ml-auto max-w-[80%] border-sky-300 bg-sky-50 dark:border-sky-800 dark:bg-sky-950`}>{visible(item.text)}</div>;
    case "assistant":
      return (
        <div data-kind="assistant" data-streaming={item.streaming} aria-busy={item.streaming} className={`${bubble} max-w-[80%] border-slate-300 bg-white dark:border-slate-700 dark:bg-slate-900`}>
          {visible(item.text)}{item.streaming && <span aria-hidden="true"> ▍</span>}
        </div>
      );
    case "tool":
      return (
        <details data-kind="tool" data-tool={item.name} className="max-w-[90%] rounded border border-slate-300 bg-white px-3 py-1 text-xs dark:border-slate-700 dark:bg-slate-900">
          <summary className="cursor-pointer font-mono">
            {visible(item.subagent ? `sub-agent ${item.subagent.type}: ${item.subagent.description}` : `${item.name}(${summarise(item.args)})`)}
            {" — "}{item.result ? (item.result.isError ? "error" : "done") : "running…"}
          </summary>
          <pre className="mt-1 whitespace-pre-wrap break-all font-mono">{visible(pretty(item.args))}</pre>
          {item.result && (
            <pre data-testid="tool-result" className={`mt-1 max-h-64 overflow-auto whitespace-pre-wrap break-all border-t border-slate-200 pt-1 font-mono dark:border-slate-700 ${item.result.isError ? "text-red-700 dark:text-red-300" : ""}`}>
              {visible(item.result.output + (item.result.path ? `\n(whole output saved at ${item.result.path})` : ""))}
            </pre>
          )}
        </details>
      );
    case "todos":
      return (
        <div data-kind="todos" className="max-w-[90%] rounded border border-amber-300 bg-amber-50 px-3 py-2 text-xs text-slate-900 dark:border-amber-800 dark:bg-amber-950 dark:text-slate-100">
          <p className="font-semibold">Todo list</p>
          <ul>{item.todos.map((t, i) => <li key={i}>[{t.status === "completed" ? "x" : t.status === "in_progress" ? "~" : " "}] {visible(t.content)}</li>)}</ul>
        </div>
      );
    case "reply":
      return <p data-kind="reply" data-state={item.state} className="text-xs text-slate-700 dark:text-slate-300">Reply {item.state}{item.reason ? `: ${item.reason}` : ""}</p>;
  }
});

function summarise(args: string): string {
  try {
    const a = JSON.parse(args);
    const first = a.file_path ?? a.command ?? a.path ?? a.description;
    return typeof first === "string" ? first.slice(0, 80) : "";
  } catch {
    return "";
  }
}

function pretty(args: string): string {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return args;
  }
}

