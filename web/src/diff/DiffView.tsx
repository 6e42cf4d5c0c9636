/** The diff viewer: one section per file, unified or side by side, syntax highlighted. */
import * as ToggleGroup from "@radix-ui/react-toggle-group";
import { useMemo, useState } from "react";
import { highlightLine, languageOf } from "./highlight";
import { type DiffLine, type FileDiff, fileName, parsePatch, splitRows } from "./parse";
import { visible } from "../text/visible";

type Mode = "unified" | "split";

const LOOK = {
  add: "bg-emerald-50 dark:bg-emerald-950",
  del: "bg-red-50 dark:bg-red-950",
  context: "",
};

export default function DiffView({ patch }: { patch: string }) {
  const files = useMemo(() => parsePatch(patch), [patch]);
  const [mode, setMode] = useState<Mode>("unified");
  return (
    <div className="flex flex-col gap-3">
      <ToggleGroup.Root type="single" value={mode} onValueChange={(v) => v && setMode(v as Mode)} aria-label="Diff layout" className="flex gap-1">
        {(["unified", "split"] as Mode[]).map((m) => (
          <ToggleGroup.Item key={m} value={m} className="rounded border border-slate-400 px-3 py-1 text-sm data-[state=on]:bg-slate-800 data-[state=on]:text-white focus-visible:outline-2 focus-visible:outline-sky-600 dark:data-[state=on]:bg-slate-200 dark:data-[state=on]:text-slate-900">
            {m === "unified" ? "Unified" : "Side by side"}
          </ToggleGroup.Item>
        ))}
      </ToggleGroup.Root>
      {files.map((f, i) => <FileSection key={i} file={f} mode={mode} />)}
    </div>
  );
}

function FileSection({ file, mode }: { file: FileDiff; mode: Mode }) {
  const name = visible(fileName(file));
  const lang = languageOf(name);
  const status = file.oldPath === null ? "added" : file.newPath === null ? "deleted" : "modified";
  return (
    <details open className="rounded border border-slate-300 dark:border-slate-700" data-file={name}>
      <summary className="cursor-pointer bg-slate-100 px-3 py-2 font-mono text-sm dark:bg-slate-800">
        {name} <span className="text-xs text-slate-600 dark:text-slate-300">({status})</span>
      </summary>
      {file.binary ? <p className="p-3 text-sm">Binary file</p> : (
        <div className="overflow-x-auto">
          <table className="w-full border-collapse font-mono text-xs" aria-label={`Changes to ${name}`}>
            <tbody>
              {file.hunks.map((h, hi) => [
                <tr key={`h${hi}`} className="bg-sky-50 text-sky-900 dark:bg-sky-950 dark:text-sky-200"><td colSpan={mode === "split" ? 4 : 3} className="px-2 py-0.5">{h.header}</td></tr>,
                ...(mode === "unified"
                  ? h.lines.map((l, li) => (
                      <tr key={`${hi}-${li}`} className={LOOK[l.kind]}>
                        <td className="w-10 select-none px-1 text-right text-slate-600 dark:text-slate-400">{l.oldNo ?? ""}</td>
                        <td className="w-10 select-none px-1 text-right text-slate-600 dark:text-slate-400">{l.newNo ?? ""}</td>
                        <Code line={l} lang={lang} />
                      </tr>
                    ))
                  : splitRows(h).map((r, ri) => (
                      <tr key={`${hi}-${ri}`}>
                        <td className="w-10 select-none px-1 text-right text-slate-600 dark:text-slate-400">{r.left?.oldNo ?? ""}</td>
                        {r.left ? <Code line={r.left} lang={lang} /> : <td />}
                        <td className="w-10 select-none border-l border-slate-300 px-1 text-right text-slate-600 dark:border-slate-700 dark:text-slate-400">{r.right?.newNo ?? ""}</td>
                        {r.right ? <Code line={r.right} lang={lang} /> : <td />}
                      </tr>
                    ))),
              ])}
            </tbody>
          </table>
        </div>
      )}
    </details>
  );
}

function Code({ line, lang }: { line: DiffLine; lang: string | null }) {
  const text = visible(line.text);
  const html = highlightLine(text, lang);
  const sign = line.kind === "add" ? "+" : line.kind === "del" ? "-" : " ";
  return (
    <td className={`whitespace-pre px-2 ${LOOK[line.kind]}`} data-kind={line.kind}>
      <span aria-hidden="true" className="select-none">{sign}</span>
      <span className="sr-only">{line.kind === "add" ? "added: " : line.kind === "del" ? "removed: " : ""}</span>
      {html === null ? text : <span dangerouslySetInnerHTML={{ __html: html }} />}
    </td>
  );
}
