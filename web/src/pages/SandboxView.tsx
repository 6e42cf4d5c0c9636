import { useMutation, useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { api, idempotencyKey } from "../api/client";
import type { ExecResult, Sandbox } from "../api/types";
import { ConfirmButton } from "../components/ConfirmButton";
import { Button, Card, ErrorText, StateBadge, TextInput } from "../components/ui";
import { Timeline } from "../timeline/Timeline";
import { useTimeline } from "../timeline/useTimeline";
import { visible } from "../text/visible";

interface Entry {
  command: string;
  result?: ExecResult;
  error?: string;
}

/** One sandbox: its state, an exec console, and its stream live. */
export default function SandboxView({ id }: { id: string }) {
  const sandbox = useQuery({ queryKey: ["sandbox", id], queryFn: () => api<Sandbox>(`/v1/sandboxes/${encodeURIComponent(id)}`), refetchInterval: 2000 });
  const { store, version, connection } = useTimeline(id);
  const [command, setCommand] = useState("");
  const [history, setHistory] = useState<Entry[]>([]);
  const exec = useMutation({
    mutationFn: (cmd: string) =>
      api<ExecResult>(`/v1/sandboxes/${encodeURIComponent(id)}/exec`, { method: "POST", json: { command: cmd, timeout_sec: 120 }, headers: { "Idempotency-Key": idempotencyKey() } }),
    onMutate: (cmd) => setHistory((h) => [...h, { command: cmd }]),
    onSuccess: (result, cmd) => setHistory((h) => h.map((e, i) => (i === h.length - 1 && e.command === cmd ? { ...e, result } : e))),
    onError: (error, cmd) => setHistory((h) => h.map((e, i) => (i === h.length - 1 && e.command === cmd ? { ...e, error: String((error as Error).message) } : e))),
  });
  const stop = useMutation({ mutationFn: () => api(`/v1/sandboxes/${encodeURIComponent(id)}/stop`, { method: "POST", headers: { "Idempotency-Key": idempotencyKey() } }) });
  return (
    <div className="flex flex-col gap-4">
      <Card>
        <div className="flex items-center gap-3">
          <h1 className="font-mono text-lg font-bold">{id}</h1>
          {sandbox.data && <StateBadge state={sandbox.data.state} />}
          <ConfirmButton
            className="ml-auto"
            label="Stop"
            confirmLabel="Stop sandbox"
            title="Stop this sandbox?"
            description="Its processes are killed and its workspace is gone. A stopped sandbox cannot be started again."
            keepLabel="Keep it running"
            disabled={stop.isPending}
            onConfirm={() => stop.mutate()}
          />
        </div>
        <ErrorText error={sandbox.error ?? stop.error} />
      </Card>
      <Card>
        <h2 className="mb-2 font-semibold">Console</h2>
        <div role="log" aria-label="Console output" className="mb-3 max-h-96 overflow-auto rounded bg-slate-950 p-2 font-mono text-xs text-slate-100">
          {history.map((e, i) => (
            <div key={i} className="mb-2">
              <div className="text-sky-300">$ {visible(e.command)}</div>
              {e.result && <pre className="whitespace-pre-wrap [overflow-wrap:anywhere]">{visible(e.result.output)}</pre>}
              {e.result && <div className="text-slate-300">exit {e.result.exit_code ?? "?"} · {Math.round(e.result.duration_ms)} ms</div>}
              {e.error && <div className="text-red-300">{e.error}</div>}
            </div>
          ))}
        </div>
        <form className="flex items-end gap-2" onSubmit={(e) => { e.preventDefault(); if (command.trim()) { exec.mutate(command); setCommand(""); } }}>
          <div className="flex-1"><TextInput label="Command to run" className="font-mono" autoComplete="off" value={command} onChange={(e) => setCommand(e.target.value)} /></div>
          <Button type="submit" variant="primary" disabled={exec.isPending}>Run</Button>
        </form>
      </Card>
      <Timeline store={store} version={version} connection={connection} height={360} />
    </div>
  );
}
