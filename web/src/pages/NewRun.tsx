import { useMutation } from "@tanstack/react-query";
import { useState } from "react";
import { api, idempotencyKey } from "../api/client";
import type { Run } from "../api/types";
import { Button, Card, ErrorText, Select, TextArea, TextInput } from "../components/ui";
import { navigate } from "../router";

interface Step {
  kind: "run" | "write";
  text: string;
  path: string;
}

/** A new run (POST /v1/requests): Codex, or the script agent whose steps are shell commands or file writes. */
export default function NewRun() {
  const [form, setForm] = useState({ title: "", spec: "", repository: "", base_branch: "main", agent: "script", model: "", test_command: "", writable_paths: "" });
  const [steps, setSteps] = useState<Step[]>([{ kind: "run", text: "", path: "" }]);
  const [key] = useState(idempotencyKey); // one key per form: a double submit starts one run
  const submit = useMutation({
    mutationFn: () =>
      api<Run>("/v1/requests", {
        method: "POST",
        headers: { "Idempotency-Key": key },
        json: {
          title: form.title || undefined,
          spec: form.spec,
          repository: form.repository,
          base_branch: form.base_branch,
          agent: form.agent,
          model: form.agent === "codex" && form.model ? form.model : undefined,
          test_command: form.test_command || undefined,
          writable_paths: form.writable_paths.split(/[\n,]/).map((s) => s.trim()).filter(Boolean),
          steps: form.agent !== "script" ? [] : steps.filter((s) => s.text || s.path).map((s) => (s.kind === "run" ? { run: s.text } : { write: s.path, content: s.text })),
        },
      }),
    onSuccess: (run) => navigate(`/runs/${run.id}`),
  });
  const set = (k: keyof typeof form) => (e: { target: { value: string } }) => setForm({ ...form, [k]: e.target.value });
  return (
    <Card className="mx-auto max-w-3xl">
      <h1 className="mb-4 text-xl font-bold">New run</h1>
      <form className="flex flex-col gap-4" onSubmit={(e) => { e.preventDefault(); submit.mutate(); }}>
        <TextInput label="Title" value={form.title} onChange={set("title")} />
        <TextArea label="Request" required rows={4} value={form.spec} onChange={set("spec")} hint="What the agent should do." />
        <TextInput label="Repository" required value={form.repository} onChange={set("repository")} hint="URL or path on the tenant's allowlist." />
        <TextInput label="Base branch" required value={form.base_branch} onChange={set("base_branch")} />
        <Select label="Agent" value={form.agent} onChange={set("agent")}>
          <option value="script">script (the steps below)</option>
          <option value="codex">codex</option>
        </Select>
        {form.agent === "codex" && <TextInput label="Model" value={form.model} onChange={set("model")} hint="Empty: the platform's default." />}
        {form.agent === "script" && <fieldset className="flex flex-col gap-3 rounded border border-slate-300 p-3 dark:border-slate-700">
          <legend className="px-1 text-sm font-medium">Script agent steps</legend>
          {steps.map((s, i) => (
            <div key={i} className="grid grid-cols-1 gap-2 sm:grid-cols-[10rem_1fr_auto]">
              <Select label={`Step ${i + 1} kind`} value={s.kind} onChange={(e) => setSteps(steps.map((x, j) => (j === i ? { ...x, kind: e.target.value as Step["kind"] } : x)))}>
                <option value="run">run a command</option>
                <option value="write">write a file</option>
              </Select>
              <div className="flex flex-col gap-2">
                {s.kind === "write" && <TextInput label={`Step ${i + 1} path`} value={s.path} onChange={(e) => setSteps(steps.map((x, j) => (j === i ? { ...x, path: e.target.value } : x)))} />}
                <TextArea label={s.kind === "run" ? `Step ${i + 1} command` : `Step ${i + 1} content`} rows={s.kind === "run" ? 1 : 4} value={s.text} onChange={(e) => setSteps(steps.map((x, j) => (j === i ? { ...x, text: e.target.value } : x)))} />
              </div>
              <Button className="self-end" aria-label={`Remove step ${i + 1}`} onClick={() => setSteps(steps.filter((_, j) => j !== i))}>Remove</Button>
            </div>
          ))}
          <Button onClick={() => setSteps([...steps, { kind: "run", text: "", path: "" }])}>Add step</Button>
        </fieldset>}
        <TextInput label="Test command" value={form.test_command} onChange={set("test_command")} />
        <TextInput label="Writable paths" value={form.writable_paths} onChange={set("writable_paths")} hint="Comma separated; empty: any path." />
        <ErrorText error={submit.error} />
        <Button type="submit" variant="primary" disabled={submit.isPending}>Start run</Button>
      </form>
    </Card>
  );
}
