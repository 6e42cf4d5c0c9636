import { useMutation, useQuery } from "@tanstack/react-query";
import { type FormEvent, useLayoutEffect, useMemo, useRef, useState } from "react";
import { api, idempotencyKey } from "../api/client";
import type { Conversation } from "../api/types";
import { Button, Card, ErrorText, StateBadge, TextArea } from "../components/ui";
import { type Item, Transcript } from "../conversation/transcript";
import { Link } from "../router";
import { Timeline } from "../timeline/Timeline";
import { useTimeline } from "../timeline/useTimeline";
import { visible } from "../text/visible";

/**
 * A DeepAgent conversation, live: its records arrive over the same resumable SSE follower as a run's
 * timeline (Last-Event-ID after a drop) and are folded into a transcript as they come, so a reply's
 * tokens show as they stream.
 */
export default function ConversationView({ id }: { id: string }) {
  const conversation = useQuery({ queryKey: ["conversation", id], queryFn: () => api<Conversation>(`/v1/conversations/${encodeURIComponent(id)}`) });
  const { store, version, connection } = useTimeline(id);
  const transcript = useMemo(() => new Transcript(), [store]);
  const items = useMemo(() => (transcript.apply(store.records), transcript.items), [transcript, version]); // eslint-disable-line
  const c = conversation.data;
  return (
    <div className="flex flex-col gap-4">
      <ErrorText error={conversation.error} />
      <Card>
        <div className="flex flex-wrap items-start gap-3">
          <div className="min-w-0 flex-1">
            <h1 className="text-xl font-bold [overflow-wrap:anywhere]">{visible(c?.title || id)}</h1>
            <p className="font-mono text-xs text-slate-700 dark:text-slate-300">
              {id} · {c?.model} · sandbox {c && <Link className="underline" href={`/sandboxes/${c.sandbox_id}`}>{c.sandbox_id}</Link>}
            </p>
          </div>
          <StateBadge state={transcript.replying ? "replying" : store.records.length ? "idle" : (c?.state ?? "requested")} />
        </div>
      </Card>
      <section aria-label="Transcript" className="flex flex-col gap-2" data-testid="transcript">
        {items.length === 0 && <p>No messages yet.</p>}
        {items.map((item) => <Entry key={item.key} item={item} />)}
      </section>
      <Compose id={id} replying={transcript.replying} />
      <details>
        <summary className="cursor-pointer text-sm font-medium">All records</summary>
        <div className="pt-2"><Timeline store={store} version={version} connection={connection} height={360} /></div>
      </details>
    </div>
  );
}

const bubble = "rounded-lg border px-3 py-2 text-sm whitespace-pre-wrap break-words";

function Entry({ item }: { item: Item }) {
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
}

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

function Compose({ id, replying }: { id: string; replying: string | null }) {
  const [text, setText] = useState("");
  const area = useRef<HTMLFormElement>(null);
  const post = useMutation({
    mutationFn: (body: string) =>
      api(`/v1/conversations/${encodeURIComponent(id)}/messages`, { method: "POST", json: { text: body }, headers: { "Idempotency-Key": idempotencyKey() } }),
    onSuccess: () => {
      setText("");
      area.current?.querySelector("textarea")?.focus(); // Send is disabled while the box is empty: the next message
    },
  });
  const cancel = useMutation({
    mutationFn: () => api(`/v1/conversations/${encodeURIComponent(id)}/cancel`, { method: "POST", json: { reason: "cancelled in the web UI" } }),
  });
  useLayoutEffect(() => {
    // a block, not an arrow expression: Chromium's scrollIntoView returns a promise, which React would call as the cleanup
    area.current?.scrollIntoView({ block: "nearest" });
  }, [replying]);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (text.trim()) post.mutate(text);
  };
  return (
    <form ref={area} onSubmit={submit} className="flex flex-col gap-2" aria-label="Message the agent">
      <TextArea
        label="Message"
        rows={3}
        value={text}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit(e);
        }}
        hint="Ctrl+Enter sends. A message sent while the agent replies waits its turn."
      />
      <div className="flex items-center gap-2">
        <Button type="submit" variant="primary" disabled={!text.trim() || post.isPending}>Send</Button>
        <Button variant="danger" disabled={!replying || cancel.isPending} onClick={() => cancel.mutate()}>Cancel reply</Button>
        <ErrorText error={post.error ?? cancel.error} />
      </div>
    </form>
  );
}
