import { useInfiniteQuery } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { api, query } from "../api/client";
import { RUN_STATES, type Page, type Run } from "../api/types";
import { Button, ErrorText, Select, StateBadge, TextInput } from "../components/ui";
import { Link, navigate, useLocation } from "../router";
import { visible } from "../text/visible";

/** The tenant's runs, filtered by state, repository and text; states refresh every two seconds. */
export function RunsList() {
  const { search } = useLocation();
  const filters = { state: search.get("state") ?? "", repository: search.get("repository") ?? "", text: search.get("text") ?? "" };
  const [draft, setDraft] = useState(filters);
  useEffect(() => setDraft(filters), [filters.state, filters.repository, filters.text]); // eslint-disable-line
  const runs = useInfiniteQuery({
    queryKey: ["runs", filters],
    queryFn: ({ pageParam }) => api<Page<Run>>(`/v1/runs${query({ ...filters, limit: 100, after: pageParam })}`),
    initialPageParam: "",
    getNextPageParam: (last) => last.next_after ?? undefined,
    refetchInterval: 2000,
  });
  const items = runs.data?.pages.flatMap((p) => p.items) ?? [];
  return (
    <div className="flex flex-col gap-4">
      <div className="flex items-center justify-between">
        <h1 className="text-xl font-bold">Runs</h1>
        <Link href="/runs/new" className="rounded bg-sky-700 px-3 py-1.5 text-sm font-medium text-white hover:bg-sky-800 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-sky-600 dark:bg-sky-600 dark:text-slate-950">New run</Link>
      </div>
      <form
        role="search"
        aria-label="Filter runs"
        className="grid grid-cols-1 items-end gap-3 sm:grid-cols-4"
        onSubmit={(e) => {
          e.preventDefault();
          navigate(`/runs${query(draft)}`);
        }}
      >
        <Select label="State" value={draft.state} onChange={(e) => setDraft({ ...draft, state: e.target.value })}>
          <option value="">any</option>
          {RUN_STATES.map((s) => <option key={s} value={s}>{s.replace("_", " ")}</option>)}
        </Select>
        <TextInput label="Repository" value={draft.repository} onChange={(e) => setDraft({ ...draft, repository: e.target.value })} />
        <TextInput label="Text" value={draft.text} onChange={(e) => setDraft({ ...draft, text: e.target.value })} />
        <Button type="submit" variant="primary">Filter</Button>
      </form>
      <ErrorText error={runs.error} />
      {runs.isPending ? <p>Loading runs…</p> : items.length === 0 ? <p>No runs match.</p> : (
        <table className="w-full border-collapse text-sm" aria-label="Runs">
          <thead>
            <tr className="border-b border-slate-300 text-left dark:border-slate-700">
              <th scope="col" className="p-2">Run</th>
              <th scope="col" className="p-2">State</th>
              <th scope="col" className="p-2">Repository</th>
              <th scope="col" className="p-2">Attempt</th>
              <th scope="col" className="p-2">Updated</th>
            </tr>
          </thead>
          <tbody>
            {items.map((r) => (
              <tr key={r.id} data-run={r.id} className="border-b border-slate-200 dark:border-slate-800">
                <td className="p-2"><Link href={`/runs/${r.id}`} className="font-medium text-sky-800 underline [overflow-wrap:anywhere] dark:text-sky-300">{visible(r.title || r.id)}</Link></td>
                <td className="p-2"><StateBadge state={r.state} /></td>
                <td className="max-w-xs truncate p-2 font-mono text-xs" title={r.repository ?? ""}>{r.repository}</td>
                <td className="p-2">{r.attempt}</td>
                <td className="p-2"><time dateTime={r.updated_at}>{new Date(r.updated_at).toLocaleString()}</time></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {runs.hasNextPage && <Button onClick={() => runs.fetchNextPage()} disabled={runs.isFetchingNextPage}>Load more</Button>}
    </div>
  );
}
