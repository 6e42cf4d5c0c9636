import { useMutation, useQuery } from "@tanstack/react-query";
import { type FormEvent, useState } from "react";
import { api, idempotencyKey } from "../api/client";
import type { Conversation, Page, Sandbox } from "../api/types";
import { Button, Card, ErrorText, Select, StateBadge, TextArea, TextInput } from "../components/ui";
import { Link, navigate } from "../router";
import { visible } from "../text/visible";

/** The tenant's DeepAgent conversations, and a form to start one on a new or an existing sandbox. */
export default function Conversations() {
  const list = useQuery({ queryKey: ["conversations"], queryFn: () => api<Page<Conversation>>("/v1/conversations?limit=500"), refetchInterval: 3000 });
  return (
    <div className="flex flex-col gap-4">
      <h1 className="text-xl font-bold">Conversations</h1>
      <NewConversation />
      <ErrorText error={list.error} />
      {list.data && (list.data.items.length === 0 ? <p>No conversations.</p> : (
        <table className="w-full text-sm" aria-label="Conversations">
          <thead><tr className="text-left">{["Conversation", "State", "Model", "Sandbox", "Updated"].map((h) => <th key={h} scope="col" className="p-2">{h}</th>)}</tr></thead>
          <tbody>
            {list.data.items.map((c) => (
              <tr key={c.id} className="border-t border-slate-200 dark:border-slate-800">
                <td className="p-2"><Link className="text-sky-800 underline dark:text-sky-300" href={`/conversations/${c.id}`}>{visible(c.title || c.id)}</Link></td>
                <td className="p-2"><StateBadge state={c.state} /></td>
                <td className="p-2">{c.model}</td>
                <td className="p-2 font-mono"><Link className="underline" href={`/sandboxes/${c.sandbox_id}`}>{c.sandbox_id}</Link></td>
                <td className="p-2"><time dateTime={c.updated_at}>{new Date(c.updated_at).toLocaleString()}</time></td>
              </tr>
            ))}
          </tbody>
        </table>
      ))}
    </div>
  );
}

function NewConversation() {
  const [title, setTitle] = useState("");
  const [model, setModel] = useState("");
  const [system, setSystem] = useState("");
  const [sandbox, setSandbox] = useState("");
  const sandboxes = useQuery({ queryKey: ["sandboxes"], queryFn: () => api<Page<Sandbox>>("/v1/sandboxes?limit=500") });
  const open = sandboxes.data?.items.filter((s) => s.state !== "terminated" && s.state !== "failed") ?? [];
  const create = useMutation({
    mutationFn: () =>
      api<Conversation>("/v1/conversations", {
        method: "POST",
        json: { model, title: title || null, system_prompt: system || null, ...(sandbox ? { sandbox_id: sandbox } : {}) },
        headers: { "Idempotency-Key": idempotencyKey() },
      }),
    onSuccess: (c) => navigate(`/conversations/${c.id}`),
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    create.mutate();
  };
  return (
    <Card>
      <form onSubmit={submit} className="grid gap-3 md:grid-cols-2" aria-label="New conversation">
        <h2 className="text-lg font-semibold md:col-span-2">New conversation</h2>
        <TextInput label="Title" value={title} onChange={(e) => setTitle(e.target.value)} />
        <TextInput label="Model" required value={model} onChange={(e) => setModel(e.target.value)} hint="As the platform's model gateway names it" />
        <Select label="Sandbox" value={sandbox} onChange={(e) => setSandbox(e.target.value)}>
          <option value="">A new sandbox</option>
          {open.map((s) => <option key={s.id} value={s.id}>{s.id} ({s.state})</option>)}
        </Select>
        <div className="md:col-span-2"><TextArea label="System prompt" rows={3} value={system} onChange={(e) => setSystem(e.target.value)} /></div>
        <div className="flex items-center gap-3 md:col-span-2">
          <Button type="submit" variant="primary" disabled={!model.trim() || create.isPending}>Start conversation</Button>
          <ErrorText error={create.error} />
        </div>
      </form>
    </Card>
  );
}
