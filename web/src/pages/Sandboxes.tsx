import { useMutation, useQuery } from "@tanstack/react-query";
import { api, idempotencyKey } from "../api/client";
import type { Page, Sandbox } from "../api/types";
import { Button, ErrorText, StateBadge } from "../components/ui";
import { Link, navigate } from "../router";

/** The tenant's sandboxes with their live state (refreshed every two seconds). */
export default function Sandboxes() {
  const list = useQuery({ queryKey: ["sandboxes"], queryFn: () => api<Page<Sandbox>>("/v1/sandboxes?limit=500"), refetchInterval: 2000 });
  const create = useMutation({
    mutationFn: () => api<Sandbox>("/v1/sandboxes", { method: "POST", json: {}, headers: { "Idempotency-Key": idempotencyKey() } }),
    onSuccess: (s) => navigate(`/sandboxes/${s.id}`),
  });
  return (
    <div className="flex flex-col gap-4">
      <div className="flex items-center justify-between">
        <h1 className="text-xl font-bold">Sandboxes</h1>
        <Button variant="primary" onClick={() => create.mutate()} disabled={create.isPending}>New sandbox</Button>
      </div>
      <ErrorText error={list.error ?? create.error} />
      {list.data && (list.data.items.length === 0 ? <p>No sandboxes.</p> : (
        <table className="w-full text-sm" aria-label="Sandboxes">
          <thead><tr className="text-left">{["Sandbox", "State", "Provider", "Image", "Updated"].map((h) => <th key={h} scope="col" className="p-2">{h}</th>)}</tr></thead>
          <tbody>
            {list.data.items.map((s) => (
              <tr key={s.id} className="border-t border-slate-200 dark:border-slate-800">
                <td className="p-2 font-mono"><Link className="text-sky-800 underline dark:text-sky-300" href={`/sandboxes/${s.id}`}>{s.id}</Link></td>
                <td className="p-2"><StateBadge state={s.state} /></td>
                <td className="p-2">{s.provider}</td>
                <td className="p-2">{s.image}</td>
                <td className="p-2"><time dateTime={s.updated_at}>{new Date(s.updated_at).toLocaleString()}</time></td>
              </tr>
            ))}
          </tbody>
        </table>
      ))}
    </div>
  );
}
