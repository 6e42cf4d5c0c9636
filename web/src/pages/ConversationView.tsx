import { useMutation, useQuery } from "@tanstack/react-query";
import { type FormEvent, useLayoutEffect, useMemo, useRef, useState } from "react";
import { api, idempotencyKey } from "../api/client";
import type { Conversation } from "../api/types";
import { Button, Card, ErrorText, StateBadge, TextArea } from "../components/ui";
import { Transcript } from "../conversation/transcript";
import { TranscriptView } from "../conversation/TranscriptView";
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
  // folded batch by batch as records arrive (the timeline's store keeps only the newest payloads)
  const transcript = useMemo(() => new Transcript(), [id]);
  const { store, version, connection } = useTimeline(id, (batch) => transcript.apply(batch));
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
          <StateBadge state={transcript.replying ? "replying" : store.count ? "idle" : (c?.state ?? "requested")} />
        </div>
      </Card>
      <TranscriptView items={transcript.items} />
      <Compose id={id} replying={transcript.replying} />
      <details>
        <summary className="cursor-pointer text-sm font-medium">All records</summary>
        <div className="pt-2"><Timeline store={store} version={version} connection={connection} height={360} /></div>
      </details>
    </div>
  );
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
